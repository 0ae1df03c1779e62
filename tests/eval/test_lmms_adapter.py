"""The lmms-eval plugin, run through lmms-eval's own registry, argument parsing and Instance API (skipped without
lmms-eval: `uv sync --extra lmms`). Expected behaviour from lmms-eval 0.7.3 (PyPI): ``evaluator.simple_evaluate``
builds the model with ``create_from_arg_string(model_args, {"batch_size", "max_batch_size", "device"})``
(``api/model.py``), dropping the ones left unset."""

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]  # not tests.recipe_utils: lmms-eval's dependencies ship a `tests` package
RECIPE = REPO / "recipes" / "tiny" / "llava15.yaml"


def requests_for(images, question="is there a red circle ?"):
    from lmms_eval.api.instance import Instance

    docs = {i: {"image": image} for i, image in enumerate(images)}
    return {"shapes": {"test": docs}}, [
        Instance("generate_until", (question, {"max_new_tokens": 3, "until": ["\n"]}, lambda d: [d["image"]], i,
                                    "shapes", "test"), idx=0, metadata={"task": "shapes", "doc_id": i, "repeats": 1})
        for i in docs
    ]


def build(synthetic_root, **config):
    from lmms_eval.models import get_model

    torch.manual_seed(0)  # the same random tiny weights for every adapter built here
    args = f"config={RECIPE},overrides=--data.synthetic.root {synthetic_root} --trainer.logger false"
    return get_model("tokencompose").create_from_arg_string(args, {"max_batch_size": None, **config})


def test_lmms_eval_builds_the_adapter_with_its_batch_size_and_device_and_answers_in_order(synthetic_root):
    from PIL import Image

    images = [Image.new("RGB", (64, 64), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    one = build(synthetic_root, batch_size=1, device="cpu")
    two = build(synthetic_root, batch_size="2", device="cpu")  # lmms-eval passes the CLI's string
    assert (one.batch_size, two.batch_size) == (1, 2) and two.device == torch.device("cpu")
    assert next(two.model.parameters()).device == torch.device("cpu")
    batches = []
    generate = two.model.generate
    two.model.generate = lambda batch, **kw: batches.append(len(batch)) or generate(batch, **kw)
    one.task_dict, requests = requests_for(images)
    two.task_dict = one.task_dict
    answers = two.generate_until(requests)
    assert batches == [2, 1]  # three requests at batch size 2
    assert answers == one.generate_until(requests) and all(isinstance(a, str) for a in answers)


def test_bad_model_args_are_named(synthetic_root):
    with pytest.raises(ValueError, match=r"batch_size='auto'"):
        build(synthetic_root, batch_size="auto")
    with pytest.raises(ValueError, match=r"unknown model_args \['checkpoint'\]"):
        build(synthetic_root, checkpoint="x.ckpt")
