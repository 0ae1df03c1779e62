"""The published configurations of the checkpoints the full-size recipes name, shipped as package data, and
building those recipes on the ``meta`` device from them: architectures, parameter counts and dtypes without
weights or network.

Inside ``meta_build()`` every tensor is created on the meta device, and every part that a recipe names by a hub
checkpoint is built from what is shipped here instead of being downloaded:

- ``HFCLIPEncoder(name_or_path=...)``, ``CausalLM(name_or_path=...)``, ``DetrSamProposer(detector=...)``:
  ``published_config(name)`` (``<org>--<name>.json``, the hub's ``config.json``);
- ``load_text_tokenizer(name)``: ``stand_in_text_tokenizer(name)`` (``<org>--<name>.tokenizer.json``), the published
  vocabulary size and special-token ids with word-level pieces. It is for shapes and ids only: it does not
  tokenise text as the real tokenizer does (too big to ship: Llama-3's ``tokenizer.json`` is 9 MB);
- ``build_sam(variant)``: segment_anything's own registry (its code is SAM's published configuration), no
  checkpoint read; ``OpenCLIPEncoder(model_name=...)``: open_clip's shipped architecture, no ``pretrained`` file.

A name without a shipped configuration is an error naming it and the ones shipped.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from functools import cache
from importlib import resources
from typing import Any

import torch

_META_BUILD: ContextVar[bool] = ContextVar("tokencompose_meta_build", default=False)


@contextlib.contextmanager
def meta_build() -> Iterator[None]:
    """Within: tensors on the meta device, hub-named parts from the shipped configurations (see the module)."""
    token = _META_BUILD.set(True)
    try:
        with torch.device("meta"):
            yield
    finally:
        _META_BUILD.reset(token)


def in_meta_build() -> bool:
    """Whether parts are being built by ``meta_build`` (they then read ``published_config``, never the hub)."""
    return _META_BUILD.get()


def _file_name(name: str, suffix: str) -> str:
    return name.strip("/").replace("/", "--") + suffix


def shipped() -> list[str]:
    """Hub names with a shipped configuration, e.g. ``lmsys/vicuna-7b-v1.5``."""
    files = resources.files(__package__).iterdir()
    return sorted(f.name.removesuffix(".json").replace("--", "/") for f in files
                  if f.name.endswith(".json") and not f.name.endswith(".tokenizer.json"))


@cache
def _read(file_name: str) -> str | None:
    path = resources.files(__package__) / file_name
    return path.read_text() if path.is_file() else None


def _load(name: str, suffix: str, what: str) -> dict[str, Any]:
    text = _read(_file_name(name, suffix))
    if text is None:
        raise ValueError(
            f"meta build: no published {what} of {name!r} is shipped with tokencompose (tokencompose/model_configs/); "
            f"shipped: {shipped()}. Give the part a `config` instead of a hub name, or add {_file_name(name, suffix)}"
        )
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def published_config(name: str) -> dict[str, Any]:
    """The hub checkpoint ``name``'s ``config.json`` as shipped (without its ``_source`` note)."""
    return _load(name, ".json", "configuration")


def stand_in_text_tokenizer(name: str):
    """A word-level tokenizer with ``name``'s published vocabulary size and special tokens at their published
    ids (the other pieces are ``<piece_i>``): what a meta build needs from a text tokenizer (its length and ids).
    It does not tokenise text as the real one does."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    spec = _load(name, ".tokenizer.json", "text tokenizer description")
    special = {role: (token, index) for role, (token, index) in spec["special_tokens"].items()}
    pieces = [f"<piece_{i}>" for i in range(spec["vocab_size"])]
    for token, index in special.values():
        pieces[index] = token
    unk = special.get("unk_token", (pieces[0], 0))[0]
    backend = Tokenizer(WordLevel({piece: i for i, piece in enumerate(pieces)}, unk_token=unk))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, name_or_path=f"{name} (meta-build stand-in)",
                                   **{role: token for role, (token, _) in special.items()})
