"""A trained checkpoint opened for exploring: its budget knobs, the model at any budget (the checkpoint reloaded
with the override, as ``tokencompose ask --model.tokenizers.patch.grid 1`` does), looks and budget sweeps."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokencompose.explore.knobs import Knob, budget_knobs, describe
from tokencompose.explore.views import Look, look, shows
from tokencompose.inference import ImageInput, stored_masks_problem
from tokencompose.model import VLM
from tokencompose.recipes import model_from_args, recipe_args

CACHED_MODELS = 6  # budgets kept loaded per checkpoint (tiny models; a real one would want fewer)
SWEEP_POINTS = 6


class ModelUnavailable(RuntimeError):
    """The checkpoint cannot be opened here (missing file, weights its recipe needs, a recipe that cannot see a new
    image); the message says what is missing and what to do."""


def load_model(ckpt_path: str, recipe: Sequence[str] = (), settings: Mapping[str, Any] = ()) -> VLM:
    """``ckpt_path`` (+ ``--config RECIPE`` / inline overrides in ``recipe``) at the budget ``settings`` -> the model,
    in eval mode: ``tokencompose ask``'s ``model_from_args``, so the page answers what the command does."""
    try:
        model = model_from_args([*recipe, *recipe_args([], dict(settings))], ckpt_path)
    except FileNotFoundError as error:
        raise ModelUnavailable(str(error)) from error
    except OSError as error:  # e.g. Hugging Face weights named by the recipe, absent offline
        raise ModelUnavailable(f"--ckpt_path {ckpt_path}: its recipe needs weights that are not here ({error}); "
                               "download them first or use a tiny recipe's checkpoint") from error
    return model.eval()


@dataclass
class Session:
    """One checkpoint: ``knobs`` of its trained budget, models by budget (least recently used dropped)."""

    ckpt_path: str
    recipe: tuple[str, ...] = ()
    knobs: list[Knob] = field(default_factory=list)
    shows: dict[str, bool] = field(default_factory=dict)
    _models: OrderedDict[tuple[tuple[str, Any], ...], VLM] = field(default_factory=OrderedDict)

    @classmethod
    def open(cls, ckpt_path: str | Path, recipe: Sequence[str] = ()) -> Session:
        """Load the trained model once; raise ModelUnavailable, saying why, when it cannot answer a new image."""
        session = cls(str(ckpt_path), tuple(recipe))
        model = session.model({})
        problem = stored_masks_problem(model)
        if problem:
            raise ModelUnavailable(f"--ckpt_path {ckpt_path}: {problem}")
        session.knobs, session.shows = budget_knobs(model), shows(model)
        return session

    @property
    def name(self) -> str:
        return Path(self.ckpt_path).parent.name or self.ckpt_path

    def model(self, settings: Mapping[str, Any]) -> VLM:
        key = tuple(sorted(settings.items()))
        if key not in self._models:
            self._models[key] = load_model(self.ckpt_path, self.recipe, settings)
            while len(self._models) > CACHED_MODELS:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key]

    def look(self, image: ImageInput, question: str, settings: Mapping[str, Any], chosen_object: int = 0) -> Look:
        return look(self.model(settings), image, question, chosen_object)

    def sweep(self, image: ImageInput, question: str, settings: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        """The answer, visual tokens, TTFT and prefill FLOPs at up to ``SWEEP_POINTS`` values of knob ``key`` (the
        others as in ``settings``), largest budget first: the trained scheme side by side across budgets."""
        knob = next((k for k in self.knobs if k.key == key), None)
        if knob is None:
            raise ValueError(f"sweep: {self.name} has no budget knob {key!r}; it has {[k.key for k in self.knobs]}")
        choices = knob.choices
        if len(choices) > SWEEP_POINTS:  # evenly spaced, both ends included
            step = (len(choices) - 1) / (SWEEP_POINTS - 1)
            choices = tuple(dict.fromkeys(choices[round(i * step)] for i in range(SWEEP_POINTS)))
        rows = []
        for value in reversed(choices):
            point = {**settings, key: value}
            if value == knob.value:
                point.pop(key)
            seen = self.look(image, question, point)
            rows.append({knob.label: value, "visual tokens": seen.answer.visual_tokens, "answer": seen.answer.answer,
                         "TTFT ms": round(seen.ttft_ms, 1), "prefill GFLOPs": round(seen.prefill_gflops, 4),
                         "budget": describe(dict(sorted(point.items())))})
        return rows


def synthetic_examples(count: int = 4, image_size: int = 64, seed: int = 0) -> list[tuple[Any, str]]:
    """The built-in synthetic shapes: ``count`` (PIL image, its question) pairs, the kind the tiny recipes train on."""
    from PIL import Image

    from tokencompose.data.synthetic import ShapesGenerator
    from tokencompose.llm.templates import IMAGE_PLACEHOLDER

    generator = ShapesGenerator(image_size=image_size, seed=seed)
    examples = []
    for index in range(count):
        sample = generator(index)
        question = sample.conversation[0]["value"].replace(IMAGE_PLACEHOLDER, "").strip()
        examples.append((Image.fromarray(sample.image), question))
    return examples
