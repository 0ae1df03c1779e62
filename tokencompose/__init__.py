"""tokencompose: compose the visual tokens a vision-language model feeds its LLM.

Importing the package is cheap (the command line's ``--help`` never loads torch); ``load`` and ``ask`` import what
they need: ``model = tokencompose.load("last.ckpt")``, ``tokencompose.ask(model, "photo.jpg", "what is it ?")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokencompose.inference import Answer, ImageInput
    from tokencompose.model import VLM


def load(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> VLM:
    """A checkpoint written by ``tokencompose fit`` -> the trained ``VLM``, rebuilt from the recipe saved in it
    (no YAML needed), every tensor loaded with ``weights_only=True``. ``overrides`` change the recipe on top, e.g.
    a test-time budget: ``tokencompose.load(path, {"model.tokenizers.patch.grid": 1})``."""
    from tokencompose.recipes import load_checkpoint

    return load_checkpoint(path, overrides)


def ask(model: VLM, image: ImageInput, question: str, max_new_tokens: int | None = None) -> Answer:
    """One question about one picture (a path, encoded bytes or a PIL image) -> ``Answer``: the greedy answer, the
    visual tokens of each stream and the seconds of encoding and answering (``tokencompose.inference.ask``, which
    ``tokencompose ask`` prints). Object masks are computed online where the model's object source does that."""
    from tokencompose.inference import ask as ask_model

    return ask_model(model, image, question, max_new_tokens)


__all__ = ["ask", "load"]
