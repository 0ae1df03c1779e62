"""The lmms-eval plugin, run through lmms-eval's own registry and Instance API (skipped without lmms-eval)."""

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]  # not tests.recipe_utils: lmms-eval's dependencies ship a `tests` package


def test_lmms_eval_finds_and_runs_the_adapter(synthetic_root):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model
    from PIL import Image

    model_class = get_model("tokencompose")
    overrides = f"--data.synthetic.root {synthetic_root} --trainer.logger false"
    lm = model_class(config=str(REPO / "recipes" / "tiny" / "llava15.yaml"), overrides=overrides)
    doc = {"image": Image.new("RGB", (64, 64), (200, 30, 30))}
    lm.task_dict = {"shapes": {"test": {0: doc}}}
    request = Instance("generate_until", ("is there a red circle ?", {"max_new_tokens": 3, "until": ["\n"]},
                                          lambda d: [d["image"]], 0, "shapes", "test"), idx=0,
                       metadata={"task": "shapes", "doc_id": 0, "repeats": 1})
    (answer,) = lm.generate_until([request])
    assert isinstance(answer, str)
