"""tokencompose: compose the visual tokens a vision-language model feeds its LLM.

Importing the package is cheap (the command line's ``--help`` never loads torch); ``load`` imports what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokencompose.model import VLM


def load(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> VLM:
    """A checkpoint written by ``tokencompose fit`` -> the trained ``VLM``, rebuilt from the recipe saved in it
    (no YAML needed), every tensor loaded with ``weights_only=True``. ``overrides`` change the recipe on top, e.g.
    a test-time budget: ``tokencompose.load(path, {"model.tokenizers.patch.grid": 1})``."""
    from tokencompose.recipes import load_checkpoint

    return load_checkpoint(path, overrides)


__all__ = ["load"]
