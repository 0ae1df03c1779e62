"""The explorer's web page (Gradio, the ``app`` extra): a thin layer over ``Session``; every number on it comes from
``tokencompose.explore.session`` / ``views``, which are tested without a browser. It listens on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from tokencompose.explore.knobs import Knob, describe, overrides
from tokencompose.explore.overlays import enlarge
from tokencompose.explore.session import Session, synthetic_examples
from tokencompose.explore.views import answer_markdown, tokens_markdown

HOST = "127.0.0.1"  # loopback only: the page runs a model on whatever it is sent
NO_IMAGE = "Upload a picture or pick one of the synthetic shapes."


def knob_component(knob: Knob, elem_id: str) -> gr.components.Component:
    """A slider for an integer range, a radio for a list of values (M3's scales, IoU thresholds)."""
    if knob.contiguous:
        return gr.Slider(knob.choices[0], knob.choices[-1], value=knob.value, step=1, label=knob.label,
                         elem_id=elem_id)
    return gr.Radio(list(knob.choices), value=knob.value, label=knob.label, elem_id=elem_id)


def panel_outputs(session: Session, image: Any, question: str, chosen: float, values: Sequence[Any]) -> tuple:
    """(tokens Markdown, answer Markdown, objects, object map, kept patches) for one checkpoint at one budget."""
    if image is None:
        return NO_IMAGE, NO_IMAGE, None, None, None
    settings = overrides(session.knobs, values)
    try:
        seen = session.look(image, question, settings, int(chosen))
    except (ValueError, RuntimeError) as error:  # a bad picture, a budget the model refuses: say it on the page
        return f"**{describe(settings)}**", f"**Cannot answer:** {error}", None, None, None
    kept = next(iter(seen.kept_patches.values()), None)
    shown = [seen.objects if seen.objects is not None else seen.image, seen.object_map, kept]
    return (f"**{describe(settings)}**\n\n{tokens_markdown(seen)}", answer_markdown(seen),
            *(None if picture is None else enlarge(picture) for picture in shown))


def _panel(index: int, session: Session, image: gr.Image, question: gr.Textbox, ask: gr.Button) -> None:
    gr.Markdown(f"### {session.name}\n`{session.ckpt_path}`")
    knobs = [knob_component(k, f"knob-{index}-{n}") for n, k in enumerate(session.knobs)]
    if not knobs:
        gr.Markdown("This scheme has no test-time budget knob.")
    chosen = gr.Slider(0, 15, value=0, step=1, label="object whose MaskInversion map to show (0 = best kept)",
                       elem_id=f"object-{index}", visible=session.shows["object_map"])
    tokens = gr.Markdown(NO_IMAGE, elem_id=f"tokens-{index}")
    answer = gr.Markdown(NO_IMAGE, elem_id=f"answer-{index}")
    with gr.Row():
        label = "what the encoder sees" + (", kept objects tinted" if session.shows["objects"] else "")
        objects = gr.Image(label=label, interactive=False)
        object_map = gr.Image(label="MaskInversion map of the chosen object (LeGrad)", interactive=False,
                              visible=session.shows["object_map"])
        kept = gr.Image(label="kept patches (dropped ones dimmed)", interactive=False,
                        visible=session.shows["kept_patches"])
    inputs = [image, question, chosen, *knobs]
    outputs = [tokens, answer, objects, object_map, kept]

    def update(image_value, question_value, chosen_value, *values):
        return panel_outputs(session, image_value, question_value, chosen_value, values)

    for trigger in (ask.click, image.change, chosen.release, *(k.change for k in knobs)):
        trigger(update, inputs, outputs, concurrency_limit=1)
    if session.knobs:
        with gr.Accordion("budget sweep: the same question at several budgets", open=False):
            key = gr.Dropdown([(k.label, k.key) for k in session.knobs], value=session.knobs[0].key, label="knob")
            run = gr.Button("sweep", elem_id=f"sweep-{index}")
            table = gr.Dataframe(interactive=False)

            def sweep(image_value, question_value, key_value, *values):
                if image_value is None:
                    return None
                return session.sweep(image_value, question_value, overrides(session.knobs, values), key_value)

            run.click(sweep, [image, question, key, *knobs], table, concurrency_limit=1)


def build_app(sessions: Sequence[Session]) -> gr.Blocks:
    """The page for one checkpoint, or two side by side (the same picture and question for both)."""
    examples = synthetic_examples()
    with gr.Blocks(title="tokencompose explorer") as app:
        gr.Markdown("## tokencompose: the token-budget explorer\nMove a budget knob: the visual tokens, the answer, "
                    "its time to first token (TTFT) and prefill FLOPs follow.")
        with gr.Row():
            image = gr.Image(type="pil", label="picture", sources=["upload"], elem_id="picture")
            with gr.Column():
                pick = gr.Radio([f"shapes {i}" for i in range(len(examples))], label="or a synthetic picture")
                question = gr.Textbox(examples[0][1], label="question", elem_id="question")
                ask = gr.Button("ask", variant="primary", elem_id="ask")
        pick.change(lambda name: examples[int(name.split()[1])] if name else (None, ""), pick, [image, question])
        with gr.Row():
            for index, session in enumerate(sessions):
                with gr.Column():
                    _panel(index, session, image, question, ask)
    return app


def launch(sessions: Sequence[Session], port: int | None = None, block: bool = True) -> gr.Blocks:
    """Serve the page on 127.0.0.1 (``port`` or the first free one from 7860); ``block=False`` returns at once."""
    app = build_app(sessions)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=HOST, server_port=port, prevent_thread_lock=not block, share=False, inbrowser=False,
               quiet=True)
    return app
