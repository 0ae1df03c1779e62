"""Data loading speed: loader samples/s on 336 px JPEGs with conversations, and time spent waiting on data.

1. Fabricates LLaVA-format data (JPEGs + JSON), converts it with ``convert_llava``, and measures the loader's
   samples/s (decode, pad-to-square, resize to 336, normalise, tokenise, collate) with 1, 2 and 4 workers.
2. Trains the tiny Mask-LLaVA recipe with 2 loader workers and measures the share of wall time between
   training steps (waiting on the loader) against the time inside them. Goal: < 5 %.

    uv run python benchmarks/data.py [--images 512]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from tokencompose.data import ShardDataModule
from tokencompose.data.convert_llava import convert_llava
from tokencompose.recipes import TokenComposeCLI

REPO = Path(__file__).resolve().parents[1]


def fabricate(root: Path, count: int) -> Path:
    """Smooth random images with a few rectangles (JPEG sizes like photos'), multi-turn conversations."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        w, h = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * rng.random() + yy * rng.random()) % 256 for _ in range(3)], -1)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
            base[y0 : y0 + 50, x0 : x0 + 80] = rng.integers(0, 255, 3)
        noise = rng.normal(0, 8, base.shape)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(images / f"{i}.jpg", quality=90)
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nwhat color is the square ? how many shapes are there ?"},
            {"from": "gpt", "value": "the square is red and there are three shapes " * 4},
            {"from": "human", "value": "is there a blue circle ?"}, {"from": "gpt", "value": "no"}]})
    source = root / "data.json"
    source.write_text(json.dumps(records))
    return source


def loader_rate(shards: str, workers: int) -> float:
    cli = TokenComposeCLI(args=["--config", str(REPO / "recipes/tiny/llava15.yaml"), "--trainer.logger", "false"], run=False)
    model = cli.model
    model.encoder.image_size = 336  # preprocessing at LLaVA's size; the model itself is not run here
    model.max_length = 2048
    data = ShardDataModule(val=shards, batch_size=16, num_workers=workers)
    data.transform = model.data_transform()
    loader = data.val_dataloader()
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


class StepTimer(Callback):
    def __init__(self) -> None:
        self.inside, self.between, self.last_end, self.steps = 0.0, 0.0, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        now = time.perf_counter()
        if self.last_end is not None and batch_idx > 5:  # skip warm-up (worker start)
            self.between += now - self.last_end
        self.start = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if batch_idx > 5:
            self.inside += now - self.start
            self.steps += 1
        self.last_end = now


class Replay:
    """Batches made before training, replayed: what a step costs with no loader at all (the baseline)."""

    def __init__(self, batches: list, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.length))


def data_wait(workers: int, steps: int, in_memory: bool = False) -> tuple[float, float]:
    args = ["--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--trainer.max_steps", str(steps),
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--data.num_workers", str(workers)]
    cli = TokenComposeCLI(args=args, run=False)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    if in_memory:
        cli.datamodule.prepare_data()
        cli.datamodule.transform = cli.model.data_transform()
        batches = list(itertools.islice(iter(cli.datamodule.train_dataloader()), 64))
        cli.trainer.fit(cli.model, train_dataloaders=Replay(batches, steps))
    else:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.between / (timer.between + timer.inside), timer.steps * cli.datamodule.batch_size / (timer.between + timer.inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = fabricate(root, args.images)
        report = convert_llava(str(source), str(root / "images"), str(root / "shards"), shard_bytes=8 * 2**20, workers=2)
        shards = f"{root}/shards/shard-{{000000..{report.shards - 1:06d}}}.tar"
        print(f"# data loading — {machine()}; {report.samples} JPEGs ({report.bytes / report.samples / 1024:.0f} KiB each), "
              f"{report.shards} shards")
        print("| loader workers | samples/s (336 px, tokenised, collated) |")
        print("|---|---|")
        for workers in (1, 2, 4):
            print(f"| {workers} | {loader_rate(shards, workers):.0f} |", flush=True)
    baseline, _ = data_wait(0, args.steps, in_memory=True)
    fraction, consumed = data_wait(2, args.steps)
    print(f"\ntiny Mask-LLaVA training, {args.steps} steps: consumes {consumed:.0f} samples/s with 2 loader workers; "
          f"time between steps {100 * fraction:.1f} % of wall time, vs {100 * baseline:.1f} % with batches already "
          f"in memory (framework overhead alone): waiting on data {100 * max(0.0, fraction - baseline):.1f} % "
          f"(goal < 5 %)")


if __name__ == "__main__":
    main()
