"""The GPU suite's smoke path on CPU: every section measures at tiny shapes, failures and a spent budget become
rows, and the rest still runs."""

import sys
import time

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_suite  # noqa: E402

SECTIONS = ["Matmul peak", "Stage-2 training step", "Prefill and time to first token", "Annotate front end",
            "MaskInversion direct vs fast"]


def test_smoke_suite_measures_every_section_and_writes_the_block(tmp_path):
    out = tmp_path / "block.md"
    start = time.process_time()
    report = gpu_suite.main(["--smoke", "--device", "cpu", "--out", str(out)])
    # CPU time, not wall time: the work the smoke path costs, whatever else shares the machine (~30 s here)
    assert time.process_time() - start < 45
    block = out.read_text()
    assert block == "\n".join(report.lines) + "\n"
    assert block.startswith("## GPU suite — ") and "CPU" in block.splitlines()[0] and "smoke" in block.splitlines()[0]
    assert all(f"### {section}" in block for section in SECTIONS)
    assert "failed" not in block and "skipped" not in block
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in block.splitlines() if line.startswith("| ")}
    for scheme in ("LLaVA-1.5", "Mask-LLaVA (57)", "Mask-LLaVA (15)", "LLaVA-Mini"):
        assert scheme in rows
    prefill = [line.split(" | ") for line in block.split("### Prefill")[1].split("###")[0].splitlines() if line.startswith("| ")]
    tokens = {cells[0].removeprefix("| "): int(cells[1]) for cells in prefill[1:]}
    # the smoke encoder has a 6 x 6 grid: all 36 patches, 1 + 36 + 20, 1 + 2 x 2 + 10, one compressed token
    assert tokens == {"LLaVA-1.5": 36, "Mask-LLaVA (57)": 57, "Mask-LLaVA (15)": 15, "LLaVA-Mini": 1}


def test_a_failing_section_is_a_row_and_the_next_still_runs():
    report = gpu_suite.Report(budget_s=100)
    report.table("t", ["name", "value", "other"])
    report.guard("broken", lambda: [][1])
    report.guard("fine", lambda: [1, 2])
    assert report.lines[-2] == "| broken | **failed** (IndexError: list index out of range) |  |"
    assert report.lines[-1] == "| fine | 1 | 2 |"


def test_no_section_starts_after_the_budget():
    report = gpu_suite.Report(budget_s=0)
    report.table("t", ["name", "value"])
    ran = []
    report.guard("late", lambda: ran.append(1) or [1])
    assert not ran and report.lines[-1] == "| late | skipped: time budget of 0 s spent |"
