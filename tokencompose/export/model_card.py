"""The model card (``README.md``) of an exported Hugging Face folder: how to load it, its token budget, the
recipe it was trained from and its scores when known. Deterministic (no dates), so two exports stay identical."""

from __future__ import annotations

from typing import Any

from tokencompose.model import VLM

USAGE = '''```python
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

processor = AutoProcessor.from_pretrained("{path}")
model = LlavaForConditionalGeneration.from_pretrained("{path}")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "{question}"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open("photo.png"), text=prompt, return_tensors="pt")
ids = model.generate(**inputs, max_new_tokens={max_new_tokens}, do_sample=False)
print(processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```'''


def _score_rows(scores: dict[str, Any]) -> list[str]:
    """``tokencompose eval``'s scores.json ({benchmark: {"scores": {metric: value}, "samples": n, ...}}) -> rows."""
    rows = []
    for benchmark, entry in scores.items():
        values = entry.get("scores", {}) if isinstance(entry, dict) else {}
        samples = entry.get("samples", "") if isinstance(entry, dict) else ""
        for metric, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
            rows.append(f"| {benchmark} | {metric} | {shown} | {samples} |")
    return rows


def model_card(vlm: VLM, path: str, recipe: str | None = None, scores: dict[str, Any] | None = None,
               source: str | None = None, question: str = "what is in the picture ?") -> str:
    """README.md text for the folder ``path`` written by ``save_hf_llava(vlm, path)``.

    Args:
        recipe: the recipe YAML the model was trained from (``vlm.recipe`` by default).
        scores: ``tokencompose eval``'s scores.json, parsed.
        source: the checkpoint it was exported from (shown as given).
    """
    recipe = recipe if recipe is not None else vlm.recipe
    budget = vlm.visual_tokens_per_image()
    streams = ", ".join(f"`{name}`: {count}" for name, count in budget.items())
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:", "- llava", "- tokencompose",
             "---", "", f"# {path.rstrip('/').split('/')[-1]}", "",
             "A LLaVA-1.5-shaped vision-language model trained with tokencompose and exported as a Hugging Face "
             "`LlavaForConditionalGeneration` folder (weights, processor, chat template, generation config)."]
    if source:
        lines += ["", f"Exported from `{source}`."]
    lines += ["", "## Visual tokens", "",
              f"{sum(budget.values())} visual tokens per image ({streams}); `config.json`'s `image_seq_length`. "
              "The image processor pads to a square with the mean colour before resizing, as the model was trained.",
              "", "## Use", "", USAGE.format(path=path, question=question, max_new_tokens=vlm.max_new_tokens)]
    rows = _score_rows(scores or {})
    if rows:
        lines += ["", "## Scores", "", "`tokencompose eval`, greedy decoding.", "",
                  "| benchmark | metric | value | samples |", "|---|---|---|---|", *rows]
    if recipe:
        lines += ["", "## Recipe", "", "The `model:` section it was trained with (`tokencompose fit --config ...`):",
                  "", "```yaml", recipe.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"
