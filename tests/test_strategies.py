import pytest
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from tests.conftest import TINY_LLAMA, build_mask_llava
from tests.recipe_utils import REPO, ParseOnlyCLI
from tokencompose.llm import CausalLM
from tokencompose.strategies import ReportedUnits, fsdp


def test_fsdp_wraps_and_checkpoints_the_named_layers():
    strategy = fsdp(wrap=["transformers.models.llama.modeling_llama.LlamaDecoderLayer"])
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._activation_checkpointing_kwargs  # checkpointing policy set
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    with pytest.raises(ValueError, match="cannot import"):
        fsdp(wrap=["transformers.NoSuchLayer"])
    with pytest.raises(ValueError, match="not an nn.Module"):
        fsdp(wrap=["json.dumps"])
    with pytest.raises(ValueError, match="wrap=\\[\\]"):
        fsdp(wrap=[])


def wrapped(policy, root: nn.Module) -> list[nn.Module]:
    """The modules FSDP's recursive wrap would make units: asked about the root first, then parent before child."""
    units = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if policy(child, False, 0):
                units.append(child)
            elif policy(child, True, 0):
                visit(child)

    assert policy(root, True, 0)
    visit(root)
    return units


@pytest.mark.parametrize(("config", "layer_class"), [
    (TINY_LLAMA, LlamaDecoderLayer),
    ({**TINY_LLAMA, "model_type": "qwen2"}, Qwen2DecoderLayer),
])
def test_auto_wrap_takes_the_decoder_layer_class_of_the_llm_built(text_tokenizer, config, layer_class):
    model = build_mask_llava(text_tokenizer, llm=CausalLM(text_tokenizer=text_tokenizer, config=config))
    strategy = fsdp()  # wrap: auto
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ReportedUnits) and policy.classes is None  # nothing known before FSDP asks
    units = wrapped(policy, model)
    assert policy.classes == {layer_class}
    assert units == list(model.llm.decoder_layers())  # each decoder layer, nothing else
    assert strategy._activation_checkpointing_kwargs == {"auto_wrap_policy": policy}  # the same layers recomputed


def test_auto_wrap_of_a_model_that_reports_nothing_names_the_option():
    with pytest.raises(ValueError, match="trainer.strategy.init_args.wrap"):
        ReportedUnits()(nn.Sequential(nn.Linear(2, 2)), True, 0)


def test_stage2_recipes_name_the_fsdp_builder():
    for name in ("llava15_stage2", "mask_llava_stage2"):
        cli = ParseOnlyCLI(args=["--config", str(REPO / "recipes" / f"{name}.yaml")], run=False)
        strategy = cli.config["trainer"]["strategy"]
        assert strategy["class_path"] == "tokencompose.strategies.fsdp"
        assert strategy["init_args"]["wrap"] == "auto"  # no class path repeated in YAML
        assert isinstance(fsdp(**strategy["init_args"]).kwargs["auto_wrap_policy"], ReportedUnits)
