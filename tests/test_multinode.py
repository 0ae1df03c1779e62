"""Two "nodes" x two processes on one machine: ``torchrun --nnodes 2`` with a static rendezvous on 127.0.0.1,
gloo on CPU, a tiny LLaVA-1.5 stage-2 recipe with activation checkpointing (tests/multinode_job.py).

DDP, not the stage-2 FSDP strategy: Lightning 2.6.6 refuses FSDPStrategy on a CPU accelerator
(accelerator_connector.py: "The strategy `fsdp` requires a GPU accelerator"), see the job's docstring.

Shown: every rank of both nodes runs the same number of steps; each step's loss, averaged over the 4 ranks
(equal target tokens per sample, so the average equals the token mean), equals one process's loss on the same
global batch of 4 within 1e-4 absolute (float32 sums in another order), at every step (the gradients
are the same average); a checkpoint written by the 4 ranks (one file, rank 0) resumes on 2 ranks and on 1 with
the same model state (the same digest, restored before any step).

Data position on resume: the checkpoint was taken at the end of the epoch (global step 3 of 3 batches), and the
resumed run starts the next epoch from its first global batch, whatever the world size (the same samples, split
over 2 ranks or read by one); a map-style sampler's position inside an epoch is not saved.
Every launch is bounded by a timeout; on expiry the process groups are killed, so nothing can hang.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("multinode_job.py")
LIMIT = 420  # seconds for every launch of a stage together


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nnodes: int, nproc: int, node_rank: int, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc_per_node", str(nproc),
            "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port), str(JOB), *args]


def launch_together(commands: list[list[str]]) -> None:
    """Start every command, wait for all within LIMIT; kill each one's process group if the time runs out."""
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
                 for c in commands]
    try:
        outputs = [p.communicate(timeout=LIMIT)[0] for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"a launch ran past {LIMIT} s (killed): a hang")
    for p, out in zip(processes, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]


def read(out: Path, name: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(out.glob(f"{name}-rank*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    fit, two, one = root / "fit", root / "resume2", root / "resume1"
    for d in (fit, two, one):
        d.mkdir()
    port = free_port()
    launch_together([torchrun(2, 2, rank, port, str(fit), "fit") for rank in (0, 1)])
    ckpt = str(fit / "fit.ckpt")
    launch_together([torchrun(1, 2, 0, free_port(), str(two), "resume", ckpt),
                     torchrun(1, 1, 0, free_port(), str(one), "resume-and-single", ckpt)])
    return {"fit": read(fit, "fit"), "resume2": read(two, "resume"), "resume1": read(one, "resume"),
            "single": read(one, "single")}


def test_every_rank_of_both_nodes_runs_the_same_steps(runs):
    ranks = runs["fit"]
    assert len(ranks) == 4 and {r["world"] for r in ranks} == {4} and sorted(r["node"] for r in ranks) == [0, 0, 1, 1]
    assert [r["steps"] for r in ranks] == [3] * 4 and [len(r["losses"]) for r in ranks] == [3] * 4
    assert len({r["digest"] for r in ranks}) == 1  # the replicas stayed equal


def test_loss_equals_one_process_on_the_same_global_batch(runs):
    ranks, single = runs["fit"], runs["single"][0]
    for step in range(3):
        keys = sorted(k for r in ranks for k in r["keys"][step])
        assert keys == sorted(single["keys"][step])  # the same global batch
        assert len({r["targets"][step] for r in ranks}) == 1  # equal token counts: mean of means = token mean
        mean = sum(r["losses"][step] for r in ranks) / 4
        assert mean == pytest.approx(single["losses"][step], abs=1e-4)
    assert len({r["losses"][0] for r in ranks}) == 4  # the ranks did read different samples


def test_a_checkpoint_of_four_ranks_resumes_on_two_and_on_one(runs):
    written = runs["fit"][0]["digest"]
    two, one = runs["resume2"], runs["resume1"]
    assert [r["world"] for r in two] == [2, 2] and one[0]["world"] == 1
    assert {r["start_digest"] for r in two + one} == {written}  # the same model state, before any step
    assert [r["steps"] for r in two + one] == [4, 4, 4]  # the global step carried on: one more
    resumed = sorted(k for r in two for k in r["keys"][0])
    assert resumed == sorted(one[0]["keys"][0]) == sorted(runs["single"][0]["keys"][0])  # the next epoch's start
    assert sum(r["losses"][0] for r in two) / 2 == pytest.approx(one[0]["losses"][0], abs=1e-4)
