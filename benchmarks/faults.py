"""Fault injection: builds each bad input itself, feeds it to the data pipeline and the tools around it
(``fault_cases_tools.py``: convert-llava, annotate, eval, fit, weights), prints what happens.

Every case runs in this process on CPU against the tiny Mask-LLaVA recipe's model (a few seconds each, about
two minutes in all). The table goes to ``benchmarks/RESULTS.md``.

    uv run python benchmarks/faults.py
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from fault_cases_tools import CASES as TOOL_CASES  # noqa: E402

from tokencompose.data import (
    ObjectRequirements,
    ShardDataModule,
    ShardStream,
    SyntheticShapes,
    write_shard,
)
from tokencompose.data.processing import sample_images
from tokencompose.data.shards import EMBEDDINGS_KEY, MASKS_KEY, decode_sample, encode_npy
from tokencompose.recipes import TokenComposeCLI

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/tiny/mask_llava.yaml"


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records = 0
        self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.bytes += len(self.format(record))


@dataclass
class Context:
    root: Path
    model: object
    synthetic: SyntheticShapes
    logs: CountingHandler
    note: str = ""

    def fresh_model(self, *overrides: str):
        """A new model from the tiny recipe, with command-line overrides."""
        return TokenComposeCLI(args=["--config", str(RECIPE), "--trainer.logger", "false", *overrides], run=False).model

    def batch(self, model) -> object:
        transform = model.data_transform()
        return transform.collator()([transform.processor(training=True)(decode_sample(self.good(i))) for i in range(4)])

    def data(self, **settings) -> ShardDataModule:
        return ShardDataModule(**settings, transform=self.model.data_transform())

    def good(self, index: int = 0) -> dict:
        if not hasattr(self, "_good"):
            self._good = [{k: v for k, v in raw.items() if k != "__url__"} for raw in _raw(self.synthetic.split_urls("val")[0])]
        return dict(self._good[index])

    def stream(self, name: str, samples: list[dict], processor=None, **settings) -> ShardStream:
        write_shard(self.root / name, samples)
        return ShardStream([str(self.root / name)], processor or self.data().processor, batch_size=1, shuffle=False,
                           **settings)


def _raw(url: str):
    from tokencompose.data import iterate_shard

    return iterate_shard(url)


def kept_and_skipped(stream: ShardStream) -> str:
    kept = sum(1 for _ in stream)
    return f"{kept} kept; skipped {dict(stream.skipped)}"


def corrupt_shards(folder: Path, count: int = 3) -> str:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"bad-{i}.tar").write_bytes(b"not a tar" * 100)
    return f"{folder}/bad-{{0..{count - 1}}}.tar"


def edit_record(sample: dict, change: Callable[[dict], None]) -> dict:
    record = json.loads(sample["json"])
    change(record)
    return {**sample, "json": json.dumps(record).encode()}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tar_of(keys: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|") as archive:
        for key in keys:
            for extension in ("json", "txt"):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = 700
                archive.addfile(info, io.BytesIO(b"{}".ljust(700)))
    return buffer.getvalue()


# ---------------------------------------------------------------- cases: (name, what is done) -> outcome
def no_match(ctx: Context) -> str:
    ctx.data(train=f"{ctx.root}/llava/shards-{{000000..000665}}.tar").shards("train")
    return "loaded"


def missing_directory(ctx: Context) -> str:
    ctx.data(train=f"{ctx.root}/nowhere").shards("train")
    return "loaded"


def all_corrupt_resampled(ctx: Context) -> str:
    list(ctx.data(train=corrupt_shards(ctx.root / "bad"), train_batches_per_epoch=10).train_dataloader())
    return "trained"


def all_corrupt_exact(ctx: Context) -> str:
    list(ctx.data(train=corrupt_shards(ctx.root / "bad"), train_mode="exact").train_dataloader())
    return "trained"


def max_length_below_visual(ctx: Context) -> str:
    ctx.fresh_model("--model.max_length", "8")
    return "built"


def max_length_below_text(ctx: Context) -> str:
    data = ctx.data(synthetic=ctx.synthetic)
    data.train_processor.conversations.max_length = 20
    list(data.train_dataloader())
    return "trained"


def overridden_train(ctx: Context) -> str:
    folder = ctx.root / "converted"
    folder.mkdir(exist_ok=True)
    counts = {"shard-000000.tar": 40, "shard-000001.tar": 24}
    for name, count in counts.items():
        write_shard(folder / name, [ctx.good(i % 8) | {"__key__": f"{name[:-4]}-{i}"} for i in range(count)])
    (folder / "manifest.json").write_text(json.dumps({"shards": {n: {"samples": c} for n, c in counts.items()}}))
    data = ctx.data(train=str(folder), synthetic=ctx.synthetic, batch_size=8)
    return (f"directory -> {len(data.shards('train').urls)} shards, {data.shards('train').samples} samples; "
            f"epoch = {data.batches_per_rank()} batches of 8 (synthetic has {ctx.synthetic.train_samples})")


def bad_setting(ctx: Context) -> str:
    ShardDataModule(batch_size=0, num_workers=-1)
    return "built"


def bad_synthetic_setting(ctx: Context) -> str:
    SyntheticShapes(samples_per_shard=0)
    return "built"


def annotation_case(change: Callable[[dict], dict], needs: ObjectRequirements | None = None) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        processor = ctx.data().processor
        if needs is not None:
            processor = replace(processor, objects=needs)
        bad, good = change(ctx.good(0)), ctx.good(1)
        if needs is not None and needs.embedding_width:
            good = with_embeddings(good, objects_of(good), needs.embedding_width)
        return kept_and_skipped(ctx.stream("annotations.tar", [bad | {"__key__": "bad"}, good], processor))

    return run


def with_embeddings(sample: dict, rows: int, width: int, value: float = 0.0) -> dict:
    return {**sample, EMBEDDINGS_KEY: encode_npy(np.full((rows, width), value, np.float16))}


def objects_of(sample: dict) -> int:
    return len(json.loads(sample["json"])["objects"])


def no_target(truncated: bool) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        processor = replace(ctx.data().processor, require_target=True)
        sample = ctx.good(0)
        if truncated:
            processor.conversations.max_length = 44  # image and question fit; the answer does not
        else:
            sample = edit_record(sample, lambda r: r.update(conversations=r["conversations"][:1]))
        return kept_and_skipped(ctx.stream("targets.tar", [sample | {"__key__": "bad"}], processor))

    return run


def sixteen_bit(ctx: Context) -> str:
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    decoded = np.asarray(decode_sample({"png": png(Image.fromarray(grey))})["png"])
    return f"16-bit grey 0..65520 -> 8-bit 0..{decoded.max()}; {100 * (decoded == 255).mean():.1f} % at 255"


def exif(ctx: Context) -> str:
    image = Image.new("RGB", (40, 20))
    tags = image.getexif()
    tags[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=tags)
    return f"stored 40x20 with orientation 6 -> decoded {'x'.join(map(str, decode_sample({'jpg': buffer.getvalue()})['jpg'].size))}"


def frames(ctx: Context) -> str:
    order = sample_images({f"{i}.jpg": i for i in range(12)})
    return "frames in order " + ", ".join(map(str, order))


def huge(ctx: Context) -> str:
    data = png(Image.new("L", (30000, 1)))
    sample = ctx.good(0) | {"png": data, "__key__": "huge"}
    return f"{len(data)}-byte 1x30000 PNG: " + kept_and_skipped(ctx.stream("huge.tar", [sample, ctx.good(1)]))


def cut_tar(cut: int, label: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        shard = ctx.root / f"cut-{label}.tar"
        shard.write_bytes(tar_of([f"k{i}" for i in range(5)])[:cut])
        stream = ShardStream([str(shard)], lambda s: s, batch_size=1, shuffle=False, counts={str(shard): 5})
        return kept_and_skipped(stream) + " (manifest: 5 samples)"

    return run


def duplicate_key(ctx: Context) -> str:
    shard = ctx.root / "dup.tar"
    shard.write_bytes(tar_of(["a", "b", "b", "c", "d"]))
    return kept_and_skipped(ShardStream([str(shard)], lambda s: s, batch_size=1, shuffle=False))


def many_warnings(ctx: Context) -> str:
    before = ctx.logs.records
    stream = ctx.stream("junk.tar", [ctx.good(0) | {"__key__": f"j{i}", "png": b"junk"} for i in range(2000)])
    outcome = kept_and_skipped(stream)
    return f"{outcome}; {ctx.logs.records - before} log lines"


MEMBER = 512 + 1024
CASES: list[tuple[str, Callable[[Context], str]]] = [
    ("shard pattern that matches nothing", no_match),
    ("`data.train` names a missing directory", missing_directory),
    ("every shard corrupt, resampled training", all_corrupt_resampled),
    ("every shard corrupt, exact training", all_corrupt_exact),
    ("`model.max_length` below one image's visual tokens", max_length_below_visual),
    ("`model.max_length` too short for any question", max_length_below_text),
    ("`data.train` overridden with a converted directory", overridden_train),
    ("`data.batch_size: 0`, `data.num_workers: -1`", bad_setting),
    ("`data.synthetic.samples_per_shard: 0`", bad_synthetic_setting),
    ("object embedding with NaN", annotation_case(lambda s: with_embeddings(s, objects_of(s), 32, np.nan),
                                                  ObjectRequirements(masks=True, embedding_width=32))),
    ("object embedding width 40 for a model reading 32", annotation_case(lambda s: with_embeddings(s, objects_of(s), 40),
                                                                         ObjectRequirements(masks=True, embedding_width=32))),
    ("embeddings for one object more than masks", annotation_case(lambda s: with_embeddings(s, objects_of(s) + 1, 32),
                                                                  ObjectRequirements(masks=True, embedding_width=32))),
    ("scores for one object fewer than masks", annotation_case(lambda s: edit_record(s, lambda r: r["objects"].pop()))),
    ("`mask_size` not the image size", annotation_case(lambda s: edit_record(s, lambda r: r.update(mask_size=[32, 64])))),
    ("mask recipe, sample without masks", annotation_case(lambda s: {k: v for k, v in s.items() if k != MASKS_KEY})),
    ("answer cut off by truncation (training)", no_target(truncated=True)),
    ("conversation without an answer (training)", no_target(truncated=False)),
    ("16-bit grey PNG", sixteen_bit),
    ("JPEG with EXIF orientation", exif),
    ("frames 0.jpg ... 11.jpg", frames),
    ("1x30000 PNG (pad-to-square would allocate 2.7 GB)", huge),
    ("tar cut at a member boundary", cut_tar(3 * MEMBER, "boundary")),
    ("tar cut inside a header", cut_tar(3 * MEMBER + 100, "header")),
    ("tar cut inside member data", cut_tar(3 * MEMBER + 600, "data")),
    ("repeated key in a tar", duplicate_key),
    ("2,000 corrupt images in one shard", many_warnings),
]


def outcome(case: Callable[[Context], str], ctx: Context) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        said = case(ctx)
    except Exception as error:  # noqa: BLE001 - the outcome is what we report
        said = f"**{type(error).__name__}**: {' '.join(str(error).split())}"
    return said.replace("|", "\\|").replace(str(ctx.root), "…"), time.perf_counter() - start


def main() -> None:
    logs = CountingHandler()
    logging.getLogger("tokencompose").addHandler(logs)
    logging.getLogger("tokencompose").propagate = False  # counted, not printed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cli = TokenComposeCLI(args=["--config", str(RECIPE), "--trainer.logger", "false"], run=False)
        synthetic = SyntheticShapes(root=str(root / "synthetic"), train_samples=64, val_samples=16, samples_per_shard=16)
        synthetic.write()
        ctx = Context(root, cli.model, synthetic, logs)
        print(f"# faults — {machine()}; tiny Mask-LLaVA (CLS + 2x2 patches + 6 objects = 11 visual tokens)\n")
        print("| case | what happens | s |")
        print("|---|---|---|")
        total = time.perf_counter()
        for name, case in CASES + TOOL_CASES:
            said, seconds = outcome(case, ctx)
            print(f"| {name} | {said} | {seconds:.2f} |", flush=True)
        print(f"\n{len(CASES) + len(TOOL_CASES)} cases in {time.perf_counter() - total:.0f} s; {logs.records} warning lines "
              f"({logs.bytes / 1024:.0f} KiB) logged in all.")


if __name__ == "__main__":
    main()
