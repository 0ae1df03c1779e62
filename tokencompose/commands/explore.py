"""``tokencompose explore``: the token-budget explorer, a web page on 127.0.0.1 (the ``app`` extra: Gradio)."""

from __future__ import annotations

import importlib.util

INSTALL = ("tokencompose explore needs the `app` extra (Gradio): `uv sync --extra app` in a checkout, or "
           "`pip install 'tokencompose[app]'`")


def explore(recipe: list[str], ckpt_path: str, compare_ckpt_path: str | None = None, port: int | None = None) -> None:
    """Open a web page (on 127.0.0.1 only) that shows, for a trained checkpoint at any test-time budget, the
    object masks and scores, the MaskInversion map of a chosen object, the kept patches, the visual tokens per
    stream, the answer, its time to first token and prefill FLOPs.

    Upload a picture (or pick a synthetic one), type a question, move the budget sliders (the knobs the recipe's
    tokenizers expose: patch grid, object count and IoU threshold, M3 scale, MQT queries, FasterVLM keep count).

    Args:
        ckpt_path: the trained checkpoint (e.g. checkpoints/tiny_mask_llava_stage2/last.ckpt); its recipe is
            read from it unless --config gives one.
        compare_ckpt_path: a second checkpoint, shown beside the first on the same picture and question.
        port: the port to serve on (default: the first free one from 7860).
    """
    if importlib.util.find_spec("gradio") is None:
        raise SystemExit(INSTALL)
    from tokencompose.explore.app import HOST, launch
    from tokencompose.explore.session import ModelUnavailable, Session

    try:
        sessions = [Session.open(ckpt_path, recipe)]
        if compare_ckpt_path is not None:
            sessions.append(Session.open(compare_ckpt_path, recipe))
    except ModelUnavailable as error:
        raise SystemExit(f"tokencompose explore: {error}") from error
    app = launch(sessions, port, block=False)
    print(f"tokencompose explore: serving on http://{HOST}:{app.server_port} (Ctrl-C stops)")
    app.block_thread()
