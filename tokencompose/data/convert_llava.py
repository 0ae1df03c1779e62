"""LLaVA-format JSON + image folder -> size-balanced WebDataset shards (``tokencompose data convert-llava``).

Input: ``llava_v1_5_mix665k.json`` / ``blip_laion_cc_sbu_558k.json`` style lists of
``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}``; text-only samples have no
``image``. Output: shards of about ``shard_bytes`` each holding the original image bytes (no re-encode, except
formats training cannot decode, which become PNG) and the sample as JSON, plus ``manifest.json``: per shard its
samples, bytes and corrupt images, the totals, and the ids of missing images and of refused ones (paths that
lead outside ``images``: absolute, ``..`` or a symlink out; they are never read).

Every record is checked before anything is written; one error lists the malformed ones. The plan (which sample
goes to which shard) is computed up front from the JSON order and image sizes, and its fingerprint (JSON
content, image sizes, shard size) is stored in the manifest: a rerun with the same inputs writes only the shards
that are missing, a rerun with other inputs is refused (``overwrite`` starts over). The manifest is rewritten
(atomically) as each shard is renamed into place, so it lists only whole shards; a shard that a kill left unlisted
is rewritten by the next run, so after any kill and rerun the manifest lists every shard and sample once.
Temporary files of a killed run are removed by the next one; one run at a time holds ``out`` (a lock file); pool
workers die with the converter.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tokencompose.progress import meter

MANIFEST = "manifest.json"
LOCK = ".convert.lock"
# The training side decodes these (tokencompose.data.shards.SAFE_DECODERS); MPO is a JPEG with extra frames.
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
SHOWN_PROBLEMS = 10


@dataclass
class Planned:
    index: int  # position in the JSON list
    record: dict[str, Any]
    path: str | None  # the resolved image file under the images root, None for text-only samples
    size: int  # image bytes


@dataclass
class ShardPlan:
    name: str
    samples: list[Planned]


@dataclass
class ConversionReport:
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    missing_images: list[str] = field(default_factory=list)
    corrupt_images: list[str] = field(default_factory=list)
    refused_images: list[dict[str, str]] = field(default_factory=list)  # {"id", "image", "reason"}
    reencoded_images: list[str] = field(default_factory=list)


def sample_key(record_id: str, index: int) -> str:
    """A WebDataset-safe key: dots and slashes would split the key into extensions and folders."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(record_id))
    return f"{index:09d}_{safe}"[:120]


# ---------------------------------------------------------------------------------------------- checking input
def record_problem(record: Any) -> str | None:
    """What is wrong with one JSON record, or None."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        return f"`id` must be a non-empty string or integer, got {rid!r}"[:200]
    image = record.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        return f"`image` must be a path (string) under --images, got {image!r}"[:200]
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return f"`conversations` must be a non-empty list of turns, got {turns!r}"[:200]
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            return f"conversations[{t}] must be an object with string `from` and `value`, got {turn!r}"[:200]
    return None


def parse_records(data: bytes, source: str) -> list[dict[str, Any]]:
    """The JSON list of records, or one ValueError naming every malformed record (index and id)."""
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: not valid JSON: {error}") from error
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON list of samples, got {type(records).__name__}")
    problems = []
    for index, record in enumerate(records):
        problem = record_problem(record)
        if problem is not None:
            named = f" (id {record['id']!r})" if isinstance(record, dict) and "id" in record else ""
            problems.append(f"record {index}{named}: {problem}")
    if problems:
        more = f"; ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ValueError(f"{source}: {len(problems)} malformed record(s), nothing written: "
                         + "; ".join(problems[:SHOWN_PROBLEMS]) + more)
    return records


def resolve_image(root: Path, relative: str) -> tuple[Path | None, str]:
    """``relative`` under the resolved ``root``, or (None, why) when it would read outside it."""
    if Path(relative).is_absolute():
        return None, "absolute path"
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # symlink loops, NUL bytes
        return None, f"unresolvable: {error}"
    if not path.is_relative_to(root):
        return None, "outside --images (.. or a symlink)"
    return path, ""


# ---------------------------------------------------------------------------------------------- the plan
def plan_shards(records: list[dict[str, Any]], images: Path, shard_bytes: int, report: ConversionReport) -> list[ShardPlan]:
    """Assign records to shards in JSON order, closing a shard once its bytes reach ``shard_bytes``."""
    root = images.resolve()
    plans: list[ShardPlan] = []
    current: list[Planned] = []
    size = 0
    for index, record in enumerate(records):
        path, image_size = None, 0
        if record.get("image") is not None:
            path, reason = resolve_image(root, record["image"])
            if path is None:
                report.refused_images.append({"id": str(record["id"]), "image": record["image"], "reason": reason})
                continue
            if not path.is_file():
                report.missing_images.append(str(record["id"]))
                continue
            image_size = path.stat().st_size
        current.append(Planned(index, record, None if path is None else str(path), image_size))
        size += image_size + len(json.dumps(record))
        if size >= shard_bytes:
            plans.append(ShardPlan(f"shard-{len(plans):06d}.tar", current))
            current, size = [], 0
    if current:
        plans.append(ShardPlan(f"shard-{len(plans):06d}.tar", current))
    return plans


def fingerprint(json_data: bytes, shard_bytes: int, plans: list[ShardPlan]) -> dict[str, Any]:
    """What the shards' contents depend on: the JSON, the images that exist and their sizes, the shard size."""
    images = hashlib.sha256()  # the records that have their image (by JSON index) and its size
    for plan in plans:
        for s in plan.samples:
            if s.path is not None:
                images.update(f"{s.index}:{s.size};".encode())
    parts = {"json_sha256": hashlib.sha256(json_data).hexdigest(), "shard_bytes": shard_bytes,
             "images_sha256": images.hexdigest()}
    return {**parts, "fingerprint": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()}


# ---------------------------------------------------------------------------------------------- workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker must not outlive the converter (after ``kill -9`` it would go on writing).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill the worker when the thread that forked
    it exits (the pool forks from the thread calling ``convert_llava``, which waits for the pool). Elsewhere, or
    if prctl fails, a thread polls the parent id. Either way a parent already gone ends the worker at once.
    """
    armed = False
    if sys.platform == "linux":
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _image_member(path: Path, root: Path) -> tuple[str, bytes, bool]:
    """(extension, bytes, re-encoded) of an image file; raises if it is unreadable or has left ``root``."""
    if not path.resolve().is_relative_to(root):  # a symlink swapped in after planning
        raise ValueError(f"{path} now leads outside the images root")
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        extension = EXTENSIONS.get(image.format or "")
    if extension is not None:
        return extension, data, False
    with Image.open(io.BytesIO(data)) as image:  # GIF, BMP, TIFF, ...: training decodes PNG, JPEG, WebP only
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return "png", buffer.getvalue(), True


def _write_plan(out: Path, root: str, plan: ShardPlan) -> tuple[str, str, dict[str, Any]]:
    """Worker: write one shard under a temporary name. Returns its name, the temporary path, its manifest entry."""
    corrupt: list[str] = []
    reencoded: list[str] = []

    def samples() -> Iterator[dict[str, Any]]:
        for planned in plan.samples:
            record_id = str(planned.record["id"])
            sample: dict[str, Any] = {"__key__": sample_key(record_id, planned.index)}
            if planned.path is not None:
                try:
                    extension, data, converted = _image_member(Path(planned.path), Path(root))
                except Exception:  # noqa: BLE001 - any unreadable image is reported, not fatal
                    corrupt.append(record_id)
                    continue
                sample[extension] = data
                if converted:
                    reencoded.append(record_id)
            sample["json"] = json.dumps(planned.record).encode()
            yield sample

    tmp = out / f".{plan.name}.tmp-{os.getpid()}"
    count = 0
    with tarfile.open(tmp, "w") as sink:
        for sample in samples():
            key = sample.pop("__key__")
            for extension, data in sample.items():
                member = tarfile.TarInfo(f"{key}.{extension}")  # mtime 0: a plan always gives the same bytes
                member.size, member.mode = len(data), 0o444
                sink.addfile(member, io.BytesIO(data))
            count += 1
    info = {"samples": count, "bytes": tmp.stat().st_size, "corrupt_images": corrupt, "reencoded_images": reencoded}
    return plan.name, str(tmp), info


# ---------------------------------------------------------------------------------------------- the output folder
def _lock(out_dir: Path) -> int:
    handle = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise RuntimeError(f"{out_dir}: another convert-llava is writing here (it holds {out_dir / LOCK})") from None
    return handle


def _remove_temporary(out_dir: Path) -> None:
    """A killed run's partial shards and manifest (safe: this run holds the lock)."""
    for leftover in [*out_dir.glob(".shard-*.tar.tmp-*"), *out_dir.glob(f".{MANIFEST}.tmp*")]:
        leftover.unlink(missing_ok=True)


def _previous_shards(out_dir: Path, plan: dict[str, Any], overwrite: bool) -> dict[str, dict[str, Any]]:
    """The shards an earlier run of the same plan finished; refuses an ``out`` holding another conversion."""
    manifest_path = out_dir / MANIFEST
    if overwrite:
        for stale in [*out_dir.glob("shard-*.tar"), manifest_path]:
            stale.unlink(missing_ok=True)
        return {}
    restart = "use --overwrite to start over (its shards are deleted), or choose another --out"
    if not manifest_path.exists():
        if any(out_dir.glob("shard-*.tar")):
            raise ValueError(f"{out_dir}: holds shards but no {MANIFEST}, so what they contain is unknown; {restart}")
        return {}
    try:
        previous = json.loads(manifest_path.read_text())
        old = previous["plan"]
        shards = dict(previous["shards"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{manifest_path}: not a manifest of this converter with a plan fingerprint ({error}); {restart}") from error
    if old.get("fingerprint") != plan["fingerprint"]:
        changed = []
        if old.get("json_sha256") != plan["json_sha256"]:
            changed.append("the JSON file's content differs")
        if old.get("shard_bytes") != plan["shard_bytes"]:
            changed.append(f"--shard-mb was {old.get('shard_bytes', 0) / 2**20:g}, now {plan['shard_bytes'] / 2**20:g}")
        if old.get("images_sha256") != plan["images_sha256"]:
            changed.append("images appeared, vanished or changed size")
        raise ValueError(f"{out_dir}: was written for other inputs ({'; '.join(changed) or 'fingerprint differs'}); "
                         f"continuing would duplicate and lose samples; {restart}")
    return shards


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / MANIFEST)


def _manifest(plans: list[ShardPlan], shards: dict[str, dict[str, Any]], report: ConversionReport,
              header: dict[str, Any]) -> dict[str, Any]:
    """The manifest from the finished shards of ``plans``; also fills ``report``'s totals."""
    done = {p.name: shards[p.name] for p in plans if p.name in shards}
    report.samples = sum(i["samples"] for i in done.values())
    report.bytes = sum(i["bytes"] for i in done.values())
    report.corrupt_images = [c for i in done.values() for c in i["corrupt_images"]]
    report.reencoded_images = [c for i in done.values() for c in i.get("reencoded_images", [])]
    report.shards = len(plans)
    return {
        **header, "complete": len(done) == len(plans), "samples": report.samples, "shards": done,
        "num_shards": report.shards, "bytes": report.bytes, "missing_images": report.missing_images,
        "corrupt_images": report.corrupt_images, "refused_images": report.refused_images,
        "reencoded_images": report.reencoded_images,
    }


def convert_llava(json_file: str, images: str, out: str, shard_bytes: int = 256 * 2**20, workers: int = 4,
                  overwrite: bool = False) -> ConversionReport:
    """Convert; returns (and writes to ``out/manifest.json``) what was done. See the module docstring."""
    json_data = Path(json_file).read_bytes()
    records = parse_records(json_data, json_file)  # before anything is written
    report = ConversionReport()
    plans = plan_shards(records, Path(images), shard_bytes, report)
    plan = fingerprint(json_data, shard_bytes, plans)
    header = {"source": os.path.abspath(json_file), "images": os.path.abspath(images), "plan": plan}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(out_dir)
    try:
        _remove_temporary(out_dir)
        shards = _previous_shards(out_dir, plan, overwrite)
        pending = [p for p in plans if not _finished(out_dir / p.name, shards.get(p.name))]
        for p in pending:
            shards.pop(p.name, None)
        _write_manifest(out_dir, _manifest(plans, shards, report, header))
        root = str(Path(images).resolve())
        context = multiprocessing.get_context("fork")  # workers are children of this thread (see _die_with_parent)
        with ProcessPoolExecutor(max(1, workers), mp_context=context, initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_write_plan, out_dir, root, p) for p in pending]  # forks before tqdm's thread
            try:
                with meter(len(plans), "convert", unit="shard", initial=len(plans) - len(pending)) as bar:
                    for future in as_completed(futures):
                        name, tmp, info = future.result()
                        os.replace(tmp, out_dir / name)
                        shards[name] = info
                        _write_manifest(out_dir, _manifest(plans, shards, report, header))
                        bar.update(1)
            except BaseException:
                for future in futures:  # do not write shards nobody will list
                    future.cancel()
                raise
        _write_manifest(out_dir, _manifest(plans, shards, report, header))
    finally:
        (out_dir / LOCK).unlink(missing_ok=True)
        os.close(lock)
    return report


def _finished(path: Path, info: dict[str, Any] | None) -> bool:
    """A shard on disk that the manifest lists with its size; anything else is (re)written."""
    return info is not None and path.is_file() and path.stat().st_size == info.get("bytes")
