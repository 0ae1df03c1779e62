"""Two-process (gloo) evaluation: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_eval_job.py ROOT OUT."""

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tokencompose.eval.runner import evaluate  # noqa: E402
from tokencompose.eval.sweep import build_model  # noqa: E402
from tokencompose.trainer import Trainer  # noqa: E402


def main() -> None:
    root, out = sys.argv[1], Path(sys.argv[2])
    model = build_model(["--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--data.synthetic.root", root], {}, None)
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    result = evaluate(model, "shapes", f"{root}/train-{{000000..000002}}.tar", out, batch_size=8, trainer=trainer)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"samples": result.samples, "scores": result.scores}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # tear gloo down before exit, or a rank may abort at shutdown


if __name__ == "__main__":
    main()
