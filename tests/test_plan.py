"""``tokencompose plan`` on the full-size LLaVA-1.5-7B stage-2 recipe (built on meta): what it reads from the
recipe and the overrides, and that its verdicts follow from its own memory figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.recipe_utils import REPO
from tests.test_meta_builds import MLP2X, VICUNA_7B
from tokencompose.cli import main
from tokencompose.planning.plan import plan

STAGE2 = str(REPO / "recipes/llava15_stage2.yaml")


@pytest.fixture(scope="module")
def one_gpu():
    return plan(["--config", STAGE2, "--trainer.devices", "1", "--data.batch_size", "4"], gpu_memory_gib=80.0)


def test_plan_json_for_eight_gpus(capsys):
    main(["plan", "--config", STAGE2, "--trainer.devices", "8", "--json", "--mfu", "0.5"])
    result = json.loads(capsys.readouterr().out)
    setup = result["setup"]
    assert (setup["world"], setup["strategy"], setup["sharding"], setup["activation_checkpointing"]) == (8, "fsdp", "FULL_SHARD", True)
    assert setup["global_batch"] == 128 and setup["sequence_length"] == 2048 and setup["mfu"] == 0.5
    assert result["parameters"]["projectors"] == {"total": MLP2X, "trainable": MLP2X}
    assert result["parameters"]["llm"] == {"total": VICUNA_7B, "trainable": VICUNA_7B}
    assert result["visual_tokens_per_image"] == {"patch": 576}
    memory = result["memory_gib"]
    # bf16 LLM + fp32 projector/encoder weights, FULL_SHARD over 8, two gathered decoder layers
    layer = (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) * 2
    weights = (VICUNA_7B * 2 + (MLP2X + result["parameters"]["encoder"]["total"]) * 4) / 8 + 2 * layer
    assert memory["weights"] == pytest.approx(weights / 2**30)
    assert memory["optimizer"] == pytest.approx(2 * memory["gradients"])
    assert result["fits"] and result["largest_batch"] >= 16
    llm = result["flops_per_sample"]["llm"]
    assert llm["backward"] == pytest.approx(2 * llm["forward"])
    assert llm["forward"] == pytest.approx(2 * 2048 * (VICUNA_7B - 32000 * 4096 - 65 * 4096) + 4 * 32 * 2048**2 * 4096)
    assert result["gpu_hours_per_epoch"] == pytest.approx(
        result["model_flops_per_sample"] * 5198 * 128 / (312e12 * 0.5) / 3600)


def test_one_gpu_needs_the_whole_model_and_fits_fewer(one_gpu):
    memory = one_gpu["memory_gib"]
    assert one_gpu["setup"]["world"] == 1 and one_gpu["setup"]["batch_size"] == 4
    assert memory["weights"] > 13 and memory["gradients"] > 12.5 and memory["optimizer"] > 25  # nothing sharded
    assert one_gpu["fits"] == (memory["total"] <= 80)
    ckpt = one_gpu["activations_gib"]
    assert ckpt["with_checkpointing"] < ckpt["without_checkpointing"] / 4
    assert one_gpu["largest_batch"] < 16


def test_plan_prints_a_table(capsys):
    main(["plan", "--config", STAGE2, "--trainer.devices", "8", "--gpu_memory_gib", "24"])
    out = capsys.readouterr().out
    assert "memory per GPU (GiB) of 24" in out and "fits: NO" in out and "GPU-hours" in out and "projectors" in out


def test_plan_help_loads_no_torch():
    probe = ("import sys\nfrom tokencompose.cli import main\ntry: main(['plan', '--help'])\nexcept SystemExit: pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "usage: tokencompose plan" in out.stdout and "--gpu_memory_gib" in out.stdout and "HEAVY []" in out.stdout


def test_an_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="trainer.strategy='deepspeed_stage_3' is not costed"):
        plan(["--config", STAGE2, "--trainer.strategy", "deepspeed_stage_3"])
