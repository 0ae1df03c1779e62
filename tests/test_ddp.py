"""Two CPU processes (gloo) under torchrun: sample coverage per mode, equal steps per rank, no hang."""

import json
import socket
import subprocess
import sys
from itertools import chain
from pathlib import Path

import pytest

from tokencompose.data import SyntheticShapes

JOB = Path(__file__).with_name("ddp_job.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(root: Path, out: Path, job: str) -> list[dict]:
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(JOB), str(root), str(out), job]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # a hang fails here
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    SyntheticShapes(root=str(root), train_samples=72, val_samples=40, samples_per_shard=24).write()
    assert len(list(root.glob("train-*.tar"))) == 3  # 3 shards over 2 ranks x 2 workers
    return root


def test_resampled_training_gives_equal_steps_per_rank_and_exact_validation(ddp_data, tmp_path):
    ranks = run_job(ddp_data, tmp_path / "resampled", "fit")
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 72 // (2 * 4)
    assert [len(r["train"]) for r in ranks] == [9, 9]
    val = list(chain.from_iterable(chain.from_iterable(r["val"] for r in ranks)))
    assert len(val) == len(set(val)) == 40  # every validation sample exactly once over ranks x workers


def test_exact_training_keeps_ranks_on_the_same_epoch_and_covers_every_sample(ddp_data, tmp_path):
    """3 shards of 24 over 2 ranks: before, rank 0 read 48 samples an epoch and rank 1 24, so rank 1 ran two
    epochs while rank 0 ran one and each split the shards by its own epoch's shuffle. Now both run
    ceil(72 / (2 x 4)) = 9 batches an epoch and together see every sample once per epoch."""
    ranks = run_job(ddp_data, tmp_path / "exact-fit", "fit-exact")
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == [0] * 9 + [1] * 9
    for epoch in (0, 1):
        seen = [key for r in ranks for keys, e in zip(r["train"], r["epochs"], strict=True) if e == epoch for key in keys]
        assert len(seen) == len(set(seen)) == 72
    first = [ranks[0]["train"][i] for i in range(9)]
    assert first != ranks[0]["train"][9:]  # each epoch reshuffles


def test_exact_pass_over_uneven_shards_sees_every_sample_once(ddp_data, tmp_path):
    """3 shards over 2 ranks x 2 workers: rank 0 reads two shards, rank 1 one, and nothing hangs."""
    ranks = run_job(ddp_data, tmp_path / "exact", "validate-train-shards")
    per_rank = [list(chain.from_iterable(r["val"])) for r in ranks]
    assert sorted(len(keys) for keys in per_rank) == [24, 48]
    seen = per_rank[0] + per_rank[1]
    assert len(seen) == len(set(seen)) == 72 and set(seen) == {f"0000-{i:08d}" for i in range(72)}


def test_evaluation_over_two_ranks_equals_one_process(ddp_data, tmp_path):
    from tests.recipe_utils import REPO
    from tokencompose.eval.runner import evaluate
    from tokencompose.eval.sweep import build_model

    out = tmp_path / "eval"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(JOB.with_name("ddp_eval_job.py")), str(ddp_data), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["samples"] == 72  # 3 uneven shards, every sample once, on both ranks
    lines = (out / "shapes_predictions.jsonl").read_text().splitlines()
    assert len({json.loads(line)["id"] for line in lines}) == 72
    model = build_model(["--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--data.synthetic.root", str(ddp_data)], {}, None)
    single = evaluate(model, "shapes", f"{ddp_data}/train-{{000000..000002}}.tar", tmp_path / "single", cost_samples=0)
    assert single.scores == ranks[0]["scores"]
