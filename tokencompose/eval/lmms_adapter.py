"""lmms-eval plugin: ``lmms-eval --model tokencompose --model_args config=RECIPE,ckpt_path=CKPT --tasks ...``.

Registered through the ``lmms_eval.models`` entry point (see pyproject.toml); this module is imported only by
lmms-eval (``uv sync --extra lmms``). ``config`` may name several recipes joined by ``+`` (a base and
overlays); ``overrides`` takes recipe overrides separated by spaces ("--model.tokenizers.patch.grid 3").
lmms-eval's ``--batch_size`` and ``--device`` reach the constructor: requests are answered ``batch_size`` at a
time (left-padded, so an answer does not depend on its batch) on ``device`` (default: CUDA when available).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from tokencompose.eval.sweep import build_model

DEFAULT_MAX_NEW_TOKENS = 16
PASSED_BY_LMMS_EVAL = ("max_batch_size",)  # given to every model; one batch size is all this adapter uses


def manifest() -> Any:
    """The entry point's payload: how lmms-eval finds the adapter."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="tokencompose", simple_class_path="tokencompose.eval.lmms_adapter.TokenComposeLMM")


def _batch_size(value: Any) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise ValueError(f"tokencompose lmms-eval adapter: batch_size={value!r}; give a whole number >= 1 "
                         "(--batch_size 8; 'auto' is not supported)")
    return size


class TokenComposeLMM(lmms):
    """A tokencompose checkpoint behind lmms-eval's model API (greedy generation tasks)."""

    def __init__(self, config: str, ckpt_path: str | None = None, overrides: str = "", device: str | None = None,
                 batch_size: int | str = 1, **extra: Any) -> None:
        super().__init__()
        unknown = sorted(set(extra) - set(PASSED_BY_LMMS_EVAL))
        if unknown:
            raise ValueError(f"tokencompose lmms-eval adapter: unknown model_args {unknown}; allowed: config, "
                             "ckpt_path, overrides (and lmms-eval's --device, --batch_size)")
        self.batch_size_per_gpu = _batch_size(batch_size)
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        recipe = [a for c in config.split("+") for a in ("--config", c)] + overrides.split()
        self.model = build_model(recipe, {}, ckpt_path).to(self._device).eval()
        transform = self.model.data_transform()
        self.processor = transform.processor(training=False)
        self.collate = transform.collator()

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    def _sample(self, context: str, images: list[Any]) -> dict[str, Any]:
        image = images[0].convert("RGB") if images else None
        turns = [{"from": "human", "value": ("<image>\n" if image is not None else "") + context}, {"from": "gpt", "value": ""}]
        sample: dict[str, Any] = {"__key__": "lmms", "json": {"conversations": turns}}
        if image is not None:
            sample["png"] = image
        return self.processor(sample)

    def _answer(self, samples: list[Any], max_new_tokens: int) -> list[str]:
        batch = move_data_to_device(self.collate(samples), self._device)
        with torch.inference_mode(not self.model.needs_autograd):  # online MaskInversion needs autograd
            return self.model.generate(batch, max_new_tokens=max_new_tokens)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; requests are batched ``batch_size`` at a time among those asking the same
        ``max_new_tokens``."""
        answers: list[str | None] = [None] * len(requests)
        pending: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            gen_kwargs = request.args[1]
            pending.setdefault(int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)), []).append(index)
        for max_new_tokens, indices in pending.items():
            for start in range(0, len(indices), self.batch_size_per_gpu):
                chunk = indices[start : start + self.batch_size_per_gpu]
                samples = []
                for index in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[index].args
                    samples.append(self._sample(context, list(doc_to_visual(self.task_dict[task][split][doc_id]) or [])))
                for index, answer in zip(chunk, self._answer(samples, max_new_tokens), strict=True):
                    for stop in requests[index].args[1].get("until", []) or []:
                        answer = answer.split(stop)[0] if stop else answer
                    answers[index] = answer
        return [a if a is not None else "" for a in answers]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the tokencompose adapter answers generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the tokencompose adapter answers single-round generation tasks only")
