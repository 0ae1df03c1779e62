"""Fixtures for the data tests: processors of tiny models, with and without object tokens."""

import pytest

from tests.conftest import build_mask_llava
from tokencompose.data import ShardDataModule
from tokencompose.tokenizers import PatchPoolTokenizer


def attached(model, **data) -> ShardDataModule:
    return ShardDataModule(**data, transform=model.data_transform())


@pytest.fixture
def patch_model(text_tokenizer):
    """A tiny LLaVA-1.5-like model: 2x2 patch tokens, no object tokens."""
    return build_mask_llava(text_tokenizer, tokenizers={"patch": PatchPoolTokenizer(grid=2)}, scaler=None)


@pytest.fixture
def datamodule_processor(patch_model):
    return attached(patch_model).processor
