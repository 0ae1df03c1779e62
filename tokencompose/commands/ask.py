"""``tokencompose ask``: one question about one picture, answered by a trained model."""

from __future__ import annotations


def ask(recipe: list[str], image: str, question: str, ckpt_path: str | None = None,
        max_new_tokens: int | None = None) -> str:
    """Answer one question about one image with a trained model; print the answer and the visual tokens per stream.

    The model is rebuilt from the recipe saved in the checkpoint (--ckpt_path alone), or from --config RECIPE
    with the checkpoint's weights; inline overrides change it (--model.tokenizers.patch.grid 1: a smaller budget).
    Object masks are computed from the image when the recipe's model.object_source does that (ObjectAnnotator);
    a recipe that reads masks stored with its data cannot answer about a new image, and says so.

    Args:
        image: the picture (JPEG, PNG or WebP).
        question: the question, as the model was trained to read it (e.g. "what color is the circle ?").
        ckpt_path: the trained checkpoint (e.g. checkpoints/tiny_llava15/last.ckpt).
        max_new_tokens: the longest answer, in tokens (default: the recipe's model.max_new_tokens).
    """
    from tokencompose.inference import ask as ask_model
    from tokencompose.recipes import model_from_args

    model = model_from_args(recipe, ckpt_path)
    try:
        result = ask_model(model, image, question, max_new_tokens)
    except (ValueError, FileNotFoundError) as error:  # the image, or a recipe that cannot see a new image
        raise SystemExit(f"tokencompose ask: {error}") from error
    print(f"Q: {result.question}\nA: {result.answer}")
    print(f"visual tokens: {result.visual_tokens} to the LLM (encode {result.encode_seconds * 1000:.0f} ms, "
          f"answer {result.generate_seconds * 1000:.0f} ms)")
    for name, count in result.streams.items():
        seen = "" if count.to_llm else "   (read by the text fusion only)"
        print(f"  {name:<12}{count.tokens:>5} of {count.slots} slots{seen}")
    return result.answer
