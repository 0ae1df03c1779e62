"""What a command pays before doing anything: wall time and peak memory of fresh interpreters that import one
thing, as a ratio to a bare ``import torch`` measured in the same run (the machine's speed cancels out).

    uv run python benchmarks/import_time.py                      # this checkout
    uv run python benchmarks/import_time.py --source /tmp/old    # another tree (e.g. `git archive REV | tar -x`)

Each case runs in its own subprocess (``python -X importtime``), ``--repeats`` times, the cases interleaved so
that load on the machine falls on all of them alike; the median is reported. Two figures per case: the wall time
of the whole interpreter, and the import time ``-X importtime`` reports (the sum of its top-level imports'
cumulative times), each also as a ratio to ``import torch`` in the same run. ``heavy`` lists which of the large
packages the case loaded (``sys.modules`` at exit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(*argv: str) -> str:
    return f"from tokencompose.cli import main\ntry: main({list(argv)!r})\nexcept SystemExit: pass"


CASES = {
    "import torch": "import torch",
    "import lightning": "import lightning",
    "tokencompose --help": _cli("--help"),
    "tokencompose eval --help": _cli("eval", "--help"),
    "tokencompose data convert-llava --help": _cli("data", "convert-llava", "--help"),
    "from tokencompose.tokenizers import PatchPoolTokenizer": "from tokencompose.tokenizers import PatchPoolTokenizer",
    "import tokencompose.model": "import tokencompose.model",
}
HEAVY = ("torch", "lightning", "lightning.pytorch.cli", "torchmetrics.functional", "torchvision.models", "transformers",
         "transformers.models.clip.modeling_clip", "open_clip", "timm", "segment_anything", "webdataset", "jsonargparse",
         "matplotlib")
PROBE = """
import resource, sys, time
start = time.perf_counter()
{code}
seconds = time.perf_counter() - start
import json
print(json.dumps({{"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def importtime_seconds(stderr: str) -> float:
    """Total import time from ``-X importtime``'s report: the cumulative microseconds of its top-level imports
    (lines ``import time: self | cumulative | name`` whose name is not indented under another import)."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|", 2)
        if not name[1:].startswith(" "):  # one space after the bar: top level; nested imports indent further
            total += int(cumulative)
    return total / 1e6


def run_case(code: str, source: str | None) -> dict:
    """One fresh interpreter: wall time from start-up to the end of ``code`` (interpreter start included)."""
    env = dict(os.environ)
    if source:  # ahead of the installed (editable) package; the working directory comes first, so run there
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    probe = PROBE.format(code=code, heavy=HEAVY)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True, env=env, timeout=600,
                         stdin=subprocess.DEVNULL, cwd=source or REPO)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall, "importtime": importtime_seconds(out.stderr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", help="a tree whose tokencompose package is imported instead of this one")
    parser.add_argument("--json", help="also write the raw medians here")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats={args.repeats}: must be >= 1")
    runs: dict[str, list[dict]] = {name: [] for name in CASES}
    for _ in range(args.repeats):  # interleaved: a burst of load elsewhere hits every case, not one
        for name, code in CASES.items():
            runs[name].append(run_case(code, args.source))
    torch_wall = statistics.median(r["wall"] for r in runs["import torch"])
    torch_import = statistics.median(r["importtime"] for r in runs["import torch"])
    print(f"# import time — {platform.machine()} CPU x{os.cpu_count()}, Python {platform.python_version()}, "
          f"{date.today().isoformat()}, median of {args.repeats}, source: {args.source or 'this checkout'}")
    print("| what | wall s (median) | min–max s | wall / `import torch` | -X importtime s | importtime / `import torch` "
          "| peak RSS MB | heavy modules loaded |")
    print("|---|---|---|---|---|---|---|---|")
    medians = {}
    for name, results in runs.items():
        walls = [r["wall"] for r in results]
        wall, rss = statistics.median(walls), statistics.median(r["rss_mb"] for r in results)
        imports = statistics.median(r["importtime"] for r in results)
        medians[name] = {"wall_s": wall, "ratio_to_torch": wall / torch_wall, "importtime_s": imports,
                         "importtime_ratio_to_torch": imports / torch_import, "rss_mb": rss, "heavy": results[0]["heavy"]}
        heavy = ", ".join(m for m in results[0]["heavy"] if m != "torch") or "—"
        print(f"| `{name}` | {wall:.2f} | {min(walls):.2f}–{max(walls):.2f} | {wall / torch_wall:.2f} | {imports:.2f} | "
              f"{imports / torch_import:.2f} | {rss:.0f} | {heavy} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(medians, f, indent=1)


if __name__ == "__main__":
    main()
