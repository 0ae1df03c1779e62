"""LLaVA-format JSON + image folder -> size-balanced WebDataset shards (``tokencompose data convert-llava``).

Input: ``llava_v1_5_mix665k.json`` / ``blip_laion_cc_sbu_558k.json`` style lists of
``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}``; text-only samples have no
``image``. Output: shards of about ``shard_bytes`` each holding the original image bytes (no re-encode) and the
sample as JSON, plus ``manifest.json`` (samples, shards, bytes, missing and corrupt images with their ids).

The plan (which sample goes to which shard) is computed up front from the JSON order and file sizes, so it is
the same on every run; each shard is written atomically by a worker process, and a rerun skips shards that
exist.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from tokencompose.data.shards import write_shard


@dataclass
class ShardPlan:
    name: str
    samples: list[dict[str, Any]]  # records with "image_path" resolved (or None)


@dataclass
class ConversionReport:
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    missing_images: list[str] = field(default_factory=list)
    corrupt_images: list[str] = field(default_factory=list)


def sample_key(record_id: str, index: int) -> str:
    """A WebDataset-safe key: dots and slashes would split the key into extensions and folders."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(record_id))
    return f"{index:09d}_{safe}"[:120]


def plan_shards(records: list[dict[str, Any]], images: Path, shard_bytes: int, report: ConversionReport) -> list[ShardPlan]:
    """Assign records to shards in JSON order, closing a shard once its bytes reach ``shard_bytes``."""
    plans: list[ShardPlan] = []
    current: list[dict[str, Any]] = []
    size = 0
    for index, record in enumerate(records):
        path = None
        if record.get("image"):
            path = images / record["image"]
            if not path.is_file():
                report.missing_images.append(str(record.get("id", index)))
                continue
        entry = dict(record, _index=index, _path=None if path is None else str(path))
        current.append(entry)
        size += (path.stat().st_size if path is not None else 0) + len(json.dumps(record))
        if size >= shard_bytes:
            plans.append(ShardPlan(f"shard-{len(plans):06d}.tar", current))
            current, size = [], 0
    if current:
        plans.append(ShardPlan(f"shard-{len(plans):06d}.tar", current))
    return plans


def _write_plan(out: Path, plan: ShardPlan) -> tuple[str, int, int, list[str]]:
    """Worker: write one shard. Returns its name, samples written, bytes, corrupt image ids."""
    corrupt: list[str] = []

    def samples():
        for entry in plan.samples:
            record = {k: v for k, v in entry.items() if not k.startswith("_")}
            sample: dict[str, Any] = {"__key__": sample_key(record.get("id", entry["_index"]), entry["_index"])}
            if entry["_path"] is not None:
                data = Path(entry["_path"]).read_bytes()
                try:
                    with Image.open(Path(entry["_path"])) as image:
                        image.verify()
                        extension = (image.format or "jpeg").lower().replace("jpeg", "jpg")
                except Exception:  # noqa: BLE001 - any unreadable image is reported, not fatal
                    corrupt.append(str(record.get("id", entry["_index"])))
                    continue
                sample[extension] = data
            sample["json"] = json.dumps(record).encode()
            yield sample

    target = out / plan.name
    count = write_shard(target, samples())
    return plan.name, count, target.stat().st_size, corrupt


def convert_llava(json_file: str, images: str, out: str, shard_bytes: int = 256 * 2**20, workers: int = 4) -> ConversionReport:
    """Convert; returns (and writes to ``out/manifest.json``) what was done."""
    records = json.loads(Path(json_file).read_text())
    if not isinstance(records, list):
        raise ValueError(f"{json_file}: expected a JSON list of samples, got {type(records).__name__}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ConversionReport()
    plans = plan_shards(records, Path(images), shard_bytes, report)
    pending = [p for p in plans if not (out_dir / p.name).exists()]
    manifest_path = out_dir / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"shards": {}}
    shard_info: dict[str, dict[str, Any]] = dict(previous.get("shards", {}))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(total=len(plans), unit="shard", desc="convert") as bar:
        bar.update(len(plans) - len(pending))
        for name, count, size, corrupt in pool.map(_write_plan, [out_dir] * len(pending), pending):
            shard_info[name] = {"samples": count, "bytes": size, "corrupt_images": corrupt}
            bar.update(1)
    for plan in plans:
        info = shard_info.get(plan.name, {})
        report.samples += info.get("samples", 0)
        report.bytes += info.get("bytes", 0)
        report.corrupt_images += info.get("corrupt_images", [])
    report.shards = len(plans)
    manifest = {
        "source": os.path.abspath(json_file), "samples": report.samples, "shards": shard_info,
        "num_shards": report.shards, "bytes": report.bytes, "missing_images": report.missing_images,
        "corrupt_images": report.corrupt_images,
    }
    tmp = manifest_path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    return report
