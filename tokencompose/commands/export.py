"""``tokencompose export``: a trained checkpoint -> a Hugging Face LLaVA folder with a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def find_scores(ckpt_path: str | None, scores: str | None) -> dict[str, Any] | None:
    """``scores`` (a scores.json), else a scores.json in the checkpoint's folder or the one above it, else None."""
    if scores is not None:
        file = Path(scores)
        if not file.is_file():
            raise FileNotFoundError(f"--scores: {scores!r} does not exist")
        return json.loads(file.read_text())
    if ckpt_path is None:
        return None
    folder = Path(ckpt_path).resolve().parent
    found = [f for f in (folder / "scores.json", folder.parent / "scores.json") if f.is_file()]
    return json.loads(found[0].read_text()) if found else None


def export_command(recipe: list[str], out: str, ckpt_path: str | None = None, scores: str | None = None) -> str:
    """Write a trained LLaVA-1.5-shaped model as a Hugging Face LLaVA folder: weights, config, processor, chat
    template, generation config, and a model card (README.md: token budget, how to load it, recipe, scores).

    The model is rebuilt from the recipe saved in the checkpoint (--ckpt_path alone), or from --config RECIPE
    with the checkpoint's weights. Only LLaVA-1.5-shaped compositions export (HF CLIP, all patches, optionally
    after CLS, one shared 2-layer MLP projector, no scaler or other extension); anything else is refused, naming
    the part that has no Hugging Face equivalent.

    Args:
        out: the folder to write (created if missing).
        ckpt_path: the trained checkpoint.
        scores: a scores.json of `tokencompose eval` for the card (default: one beside the checkpoint or a folder up).
    """
    from tokencompose.export import export_problems, model_card, save_hf_llava
    from tokencompose.recipes import model_from_args

    model = model_from_args(recipe, ckpt_path)
    problems = export_problems(model)
    if problems:
        raise SystemExit("tokencompose export: this composition has no Hugging Face LLaVA equivalent:\n  - "
                         + "\n  - ".join(problems))
    card_scores = find_scores(ckpt_path, scores)
    save_hf_llava(model, out)
    card = model_card(model, out, scores=card_scores, source=ckpt_path)
    (Path(out) / "README.md").write_text(card)
    print(f"Hugging Face LLaVA folder written to {out} ({sum(model.visual_tokens_per_image().values())} visual tokens "
          f"per image{'; scores in the model card' if card_scores else ''}). Load it with "
          f"AutoProcessor.from_pretrained({out!r}) and LlavaForConditionalGeneration.from_pretrained({out!r}).")
    return out
