import pytest
from lightning.pytorch.strategies import FSDPStrategy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from tests.recipe_utils import REPO, ParseOnlyCLI
from tokencompose.strategies import fsdp


def test_fsdp_wraps_and_checkpoints_the_named_layers():
    strategy = fsdp(wrap=["transformers.models.llama.modeling_llama.LlamaDecoderLayer"])
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._activation_checkpointing_kwargs  # checkpointing policy set
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    with pytest.raises(ValueError, match="cannot import"):
        fsdp(wrap=["transformers.NoSuchLayer"])
    with pytest.raises(ValueError, match="not an nn.Module"):
        fsdp(wrap=["json.dumps"])


def test_stage2_recipes_name_the_fsdp_builder():
    for name in ("llava15_stage2", "mask_llava_stage2"):
        cli = ParseOnlyCLI(args=["--config", str(REPO / "recipes" / f"{name}.yaml")], run=False)
        strategy = cli.config["trainer"]["strategy"]
        assert strategy["class_path"] == "tokencompose.strategies.fsdp"
        assert fsdp(**strategy["init_args"]).kwargs["auto_wrap_policy"]
