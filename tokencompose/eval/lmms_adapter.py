"""lmms-eval plugin: ``lmms-eval --model tokencompose --model_args config=RECIPE,checkpoint=CKPT --tasks ...``.

Registered through the ``lmms_eval.models`` entry point (see pyproject.toml); this module is imported only by
lmms-eval, which must be installed separately. ``config`` may name several recipes joined by ``+`` (a base and
overlays); ``overrides`` takes recipe overrides separated by spaces ("--model.tokenizers.patch.grid 3").
"""

from __future__ import annotations

from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from tokencompose.eval.sweep import build_model


def manifest() -> Any:
    """The entry point's payload: how lmms-eval finds the adapter."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="tokencompose", simple_class_path="tokencompose.eval.lmms_adapter.TokenComposeLMM")


class TokenComposeLMM(lmms):
    """A tokencompose checkpoint behind lmms-eval's model API (greedy generation tasks)."""

    def __init__(self, config: str, checkpoint: str | None = None, overrides: str = "", device: str = "cpu",
                 batch_size: int = 1, **_: Any) -> None:
        super().__init__()
        recipe = [a for c in config.split("+") for a in ("--config", c)] + overrides.split()
        self.model = build_model(recipe, {}, checkpoint).to(device).eval()
        transform = self.model.data_transform()
        self.processor = transform.processor(training=False)
        self.collate = transform.collator()
        self.batch_size_per_gpu = int(batch_size)

    def _answer(self, context: str, images: list[Any], max_new_tokens: int) -> str:
        image = images[0].convert("RGB") if images else None
        turns = [{"from": "human", "value": ("<image>\n" if image is not None else "") + context}, {"from": "gpt", "value": ""}]
        sample: dict[str, Any] = {"__key__": "lmms", "json": {"conversations": turns}}
        if image is not None:
            sample["png"] = image
        batch = self.collate([self.processor(sample)])
        batch.pixels = batch.pixels.to(self.model.device)
        with torch.no_grad():
            return self.model.generate(batch, max_new_tokens=max_new_tokens)[0]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
            answer = self._answer(context, list(visuals), int(gen_kwargs.get("max_new_tokens", 16)))
            for stop in gen_kwargs.get("until", []) or []:
                answer = answer.split(stop)[0] if stop else answer
            answers.append(answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the tokencompose adapter answers generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the tokencompose adapter answers single-round generation tasks only")
