"""The contract every exported visual tokenizer and extension keeps (train and eval mode):

- a tokenizer's projected stream has exactly ``num_tokens`` slots at its test budget, never more than
  ``num_tokens(training=True)`` in training (and exactly that at its largest budget), at ``output_width``;
- every part's state dict round-trips standalone: built twice from the same arguments, loading one into the
  other gives the same outputs (weights never come from a later, mutating step);
- every part answers ``problems`` with a list, empty on a model it fits.

An export without an example below fails ``test_every_exported_part_has_an_example``: add one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import tokencompose.llm as llm_package
import tokencompose.masks as masks_package
import tokencompose.tokenizers as tokenizers_package
from tests.conftest import TINY_HF_CLIP, TINY_LLAMA, build_mask_llava
from tokencompose.encoders import HFCLIPEncoder
from tokencompose.llm import AttentionPolicy, CausalLM, DecodingPolicy, TextFusion
from tokencompose.masks import GroundTruthMasks, MaskInversionSettings, ObjectSource
from tokencompose.tokenizers import BudgetSchedule, VisualTokenizer
from tokencompose.types import ObjectMasks

BASES = (VisualTokenizer, TextFusion, AttentionPolicy, DecodingPolicy, BudgetSchedule, ObjectSource)
WIDTH = TINY_HF_CLIP["hidden_size"]

# class name -> how to build a tiny one (a factory is called with the encoder width, as the VLM does)
TOKENIZERS: dict[str, Callable[[], VisualTokenizer]] = {
    "GlobalTokenizer": lambda: tokenizers_package.GlobalTokenizer(),
    "PatchPoolTokenizer": lambda: tokenizers_package.PatchPoolTokenizer(grid=2),
    "ObjectTokenizer": lambda: tokenizers_package.ObjectTokenizer(max_objects=2, train_max_objects=3, background=True),
    "MatryoshkaPoolTokenizer": lambda: tokenizers_package.MatryoshkaPoolTokenizer(scales=(1, 4, 64), scale=4),
    "MatryoshkaQueryTransformer": lambda: tokenizers_package.MatryoshkaQueryTransformer(WIDTH, num_queries=16, heads=4, active=8),
    "QueryCompressor": lambda: tokenizers_package.QueryCompressor(WIDTH, side=2, heads=4),
    "CLSAttentionSelector": lambda: tokenizers_package.CLSAttentionSelector(keep=5, layer=-1),
    "CompressionTokens": lambda: tokenizers_package.CompressionTokens(WIDTH, count=2),
    "VisionZipTokenizer": lambda: tokenizers_package.VisionZipTokenizer(dominant=6, contextual=3, layer=-1),
}
LLM = lambda: CausalLM(text_tokenizer=_text_tokenizer(), config={**TINY_LLAMA, "attn_implementation": "eager"})  # noqa: E731
EXTENSIONS: dict[str, Callable[[], dict]] = {  # name -> VLM arguments that use it
    "ModalityPreFusion": lambda: dict(tokenizers={"patch": tokenizers_package.PatchPoolTokenizer(grid=None),
                                                  "q": partial(tokenizers_package.QueryCompressor, side=1, heads=4)},
                                      text_fusion=partial(llm_package.ModalityPreFusion, num_layers=1)),
    "NoTextFusion": lambda: dict(text_fusion=llm_package.NoTextFusion()),
    "HideBehindStream": lambda: dict(tokenizers={"patch": tokenizers_package.PatchPoolTokenizer(grid=2),
                                                 "voco": partial(tokenizers_package.CompressionTokens, count=1)},
                                     attention=llm_package.HideBehindStream("voco")),
    "CausalAttention": lambda: dict(attention=llm_package.CausalAttention()),
    "FastV": lambda: dict(decoding=llm_package.FastV(layer=1, drop_ratio=0.5), llm=LLM()),
    "FitPrune": lambda: dict(decoding=llm_package.FitPrune(schedule=[2, 1]), llm=LLM()),
    "SparseVLM": lambda: dict(decoding=llm_package.SparseVLM(budget=None, keep=[3, 2], layers=(0, 1)), llm=LLM()),
    "PlainDecoding": lambda: dict(decoding=llm_package.PlainDecoding()),
    "AverageOverBudgets": lambda: dict(tokenizers={"patch": tokenizers_package.MatryoshkaPoolTokenizer(scales=(1, 4, 64))},
                                       budget_schedule=tokenizers_package.AverageOverBudgets("patch")),
    "SampledBudget": lambda: dict(tokenizers={"patch": partial(tokenizers_package.MatryoshkaQueryTransformer, num_queries=16, heads=4)},
                                  budget_schedule=tokenizers_package.SampledBudget("patch", seed=1)),
    "FixedBudget": lambda: dict(budget_schedule=tokenizers_package.FixedBudget()),
    "ObjectAnnotator": lambda: dict(object_source=masks_package.ObjectAnnotator(GroundTruthMasks(), MaskInversionSettings(iterations=1))),
    "GivenObjects": lambda: dict(object_source=masks_package.GivenObjects()),
}


def _text_tokenizer():
    from tokencompose.data import shapes_text_tokenizer

    return shapes_text_tokenizer()


def exported(package) -> list[type]:
    return [obj for name in package.__all__ if inspect.isclass(obj := getattr(package, name))
            and issubclass(obj, BASES) and obj not in BASES and not inspect.isabstract(obj)]


ALL = sorted({c for p in (tokenizers_package, llm_package, masks_package) for c in exported(p)}, key=lambda c: c.__name__)


def test_every_exported_part_has_an_example():
    missing = [c.__name__ for c in ALL if c.__name__ not in TOKENIZERS | EXTENSIONS]
    assert not missing, f"add an example to tests/test_contracts.py for {missing}"


def features_and_objects(encoder, tokenizer, batch: int = 2):
    torch.manual_seed(1)
    pixels = torch.randn(batch, 3, 64, 64)
    masks = torch.zeros(batch, 3, 64, 64, dtype=torch.bool)
    masks[:, 0, :32], masks[:, 1, 32:, :32], masks[:, 2, 40:, 40:] = True, True, True
    objects = ObjectMasks(masks, torch.tensor([[0.9, 0.5, 0.7]] * batch), torch.ones(batch, 3, dtype=torch.bool))
    return encoder(pixels, tokenizer.encoder_request()), objects


def projected_tokens(tokenizer, features, objects, projector):
    return tokenizer.project(tokenizer(features, objects), projector)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_tokenizer_counts_and_widths_match_what_it_emits(name, training):
    encoder = HFCLIPEncoder(config=TINY_HF_CLIP).eval()
    tokenizer = TOKENIZERS[name]().train(training)
    features, objects = features_and_objects(encoder, tokenizer)
    stream = tokenizer(features, objects)
    assert stream.width == tokenizer.output_width(encoder)
    projector = nn.Linear(stream.width, 16)
    variants = tokenizer.budget_variants() or [tokenizer.current_budget()]
    configured = tokenizer.current_budget()
    counts = []
    for variant in variants:
        if tokenizer.budget_variants():
            tokenizer.use_budget(variant)
        out = projected_tokens(tokenizer, features, objects, projector)
        assert out.tokens.shape[-1] == 16 and out.valid.shape == out.tokens.shape[:2]
        counts.append(out.tokens.shape[1])
        if not training:
            assert out.tokens.shape[1] == tokenizer.num_tokens(encoder)  # the test budget, exactly
    if tokenizer.budget_variants():
        tokenizer.use_budget(configured)
    if training:
        assert max(counts) == tokenizer.num_tokens(encoder, training=True)  # the most a training step uses
    tokenizer.train(not training)  # the answer does not depend on the module's mode
    assert tokenizer.num_tokens(encoder, training=training) == (
        tokenizer.num_tokens(encoder, training=True) if training else tokenizer.num_tokens(encoder))


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_tokenizer_state_dict_round_trips_standalone(name):
    encoder = HFCLIPEncoder(config=TINY_HF_CLIP).eval()
    torch.manual_seed(2)
    a = TOKENIZERS[name]().eval()
    torch.manual_seed(3)
    b = TOKENIZERS[name]().eval()
    b.load_state_dict(a.state_dict())
    features, objects = features_and_objects(encoder, a)
    assert_close(a(features, objects).tokens, b(features, objects).tokens)


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_extension_builds_fits_and_round_trips_standalone(name, text_tokenizer, make_batch):
    torch.manual_seed(2)
    a = build_mask_llava(text_tokenizer, **{"scaler": None, "tokenizers": {"patch": tokenizers_package.PatchPoolTokenizer(grid=2)},
                                            **EXTENSIONS[name]()})
    torch.manual_seed(3)
    b = build_mask_llava(text_tokenizer, **{"scaler": None, "tokenizers": {"patch": tokenizers_package.PatchPoolTokenizer(grid=2)},
                                            **EXTENSIONS[name]()})
    parts = a.parts()
    for part in (a.object_source, a.text_fusion, a.attention, a.decoding, a.budget_schedule):
        assert part.problems(parts) == []
    slot = next(p for p in (a.object_source, a.text_fusion, a.attention, a.decoding, a.budget_schedule)
                if type(p).__name__ == name)
    other = next(p for p in (b.object_source, b.text_fusion, b.attention, b.decoding, b.budget_schedule)
                 if type(p).__name__ == name)
    other.load_state_dict(slot.state_dict())  # standalone: the part's own state dict fits a part built alike
    b.load_state_dict(a.state_dict())
    batch = make_batch(a, count=2)
    a.train(), b.train()
    with torch.enable_grad():
        loss_a = a.budget_schedule.training_loss(lambda: a(batch)[1], a.tokenizers)
        loss_b = b.budget_schedule.training_loss(lambda: b(batch)[1], b.tokenizers)
    assert torch.isfinite(loss_a)
    assert_close(loss_a, loss_b)
    a.eval(), b.eval()
    with torch.enable_grad() if a.needs_autograd else torch.no_grad():
        assert a.generate(batch, max_new_tokens=2) == b.generate(batch, max_new_tokens=2)


@pytest.mark.parametrize("recipe", __import__("tests.recipe_utils", fromlist=["TINY_RECIPES"]).TINY_RECIPES,
                         ids=lambda p: p.name)
def test_every_tiny_recipe_sends_the_llm_exactly_its_budget(recipe, synthetic_root):
    """What the data pipeline sizes sequences with (the budgets) is what reaches the LLM, train and eval."""
    from tests.conftest import raw_samples
    from tests.recipe_utils import small_data
    from tokencompose.recipes import model_from_args

    model = model_from_args(["--config", str(recipe), "--model.init_weights", "null", *small_data(synthetic_root)])
    transform = model.data_transform()
    samples = [s for s in raw_samples(3) if s]
    for training in (False, True):
        model.train(training)
        batch = transform.collator()([transform.processor(training=training)(s) for s in samples])
        with torch.enable_grad() if model.needs_autograd else torch.no_grad():
            fused = model.fuse(batch, for_generation=not training)
        slots = (fused.visual_kind >= 0).sum(1)  # visual positions per sample (one image each)
        budget = sum(model.visual_tokens_per_image(training=training).values())
        assert (slots <= budget).all() if training else (slots == budget).all(), (slots.tolist(), budget)
