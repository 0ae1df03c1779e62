"""``tokencompose annotate``: object masks and MaskInversion embeddings computed once, written to new shards.

A LightningModule run by ``Trainer.predict``. The items it predicts on are *shards*: Lightning spreads them
over devices and nodes, and each step annotates one whole shard and writes it under ``output_dir`` with the
same name — its ``<shard>.report.json`` first, then the shard atomically, so a killed run leaves whole shards
only (the next run removes its partial files) and a restart skips the shards that have both. Samples in equal samples out, except corrupt images, which
are skipped and listed in the shard's report. Samples with one image are annotated; text-only samples and
samples with several images pass through unannotated (the training side reads object masks for single-image
samples only: ``SampleProcessor``). Keys and member names are sanitised (no ``/``, ``..`` or odd characters
reach the output tar). An input shard that cannot be read to its end (a truncated tar) is skipped, reported
and retried by the next run; the job goes on. At the end rank 0 writes ``output_dir/manifest.json`` listing
every finished shard of the inputs with its samples, so the folder is a training input.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tokencompose.data.datamodule import SyntheticShapes, _urls
from tokencompose.data.processing import IMAGE_KEYS, ImageTransform
from tokencompose.data.shards import (
    EMBEDDINGS_KEY,
    MASKS_KEY,
    decode_sample,
    encode_npy,
    iterate_shard,
    pack_masks,
    unpack_masks,
    write_shard,
)
from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.annotator import ObjectAnnotator
from tokencompose.progress import LineMeter, meter
from tokencompose.types import ObjectMasks

log = logging.getLogger(__name__)
ANNOTATION_VERSION = 1
MANIFEST = "manifest.json"
UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]")
SAFE_EXTENSION = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
SAFE_SHARD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass
class ShardReport:
    shard: str
    samples_in: int = 0
    samples_out: int = 0
    annotated: int = 0
    text_only: int = 0  # passed through unannotated
    multi_image: int = 0  # passed through unannotated
    corrupt: list[str] = field(default_factory=list)
    renamed_keys: int = 0  # keys with characters a tar member name must not have, or repeated
    dropped_members: list[str] = field(default_factory=list)  # members whose extension is not a plain name
    error: str | None = None  # the input could not be read to its end; nothing was written for it
    skipped_existing: bool = False


def _first(items: list[str]) -> str:
    return items[0]


def target_name(url: str) -> str:
    """The output shard's file name: the input's last path part (the last word of a ``pipe:`` command)."""
    return url.rstrip("/").rsplit("/", 1)[-1].split(" ")[-1]


def folder_shards(folder: Path) -> list[str]:
    """The shards a converted or annotated folder's ``manifest.json`` lists, by name."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"inputs: {folder} is a folder without {MANIFEST}; give shard paths, or a folder written "
                         "by `tokencompose data convert-llava` or `tokencompose annotate`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("complete") is False:
        raise ValueError(f"inputs: {manifest_path} says its run did not finish; rerun it first (its shards would "
                         "be annotated without the missing ones)")
    names = manifest.get("shards")
    if not isinstance(names, dict):
        raise ValueError(f"inputs: {manifest_path} has no `shards` object")
    unsafe = [n for n in names if not SAFE_SHARD_NAME.fullmatch(n)]
    if unsafe:
        raise ValueError(f"inputs: {manifest_path} lists shard names that are not plain file names: {unsafe[:5]}")
    return [str(folder / name) for name in sorted(names)]


def shard_inputs(spec: str | list[str] | None) -> list[str]:
    """Shard URLs from paths with brace ranges, ``pipe:`` commands, URLs and folders with a manifest."""
    specs = [] if spec is None else [spec] if isinstance(spec, str) else list(spec)
    urls = [u for s in specs for u in (folder_shards(Path(s)) if Path(s).is_dir() else _urls(s))]
    absent = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).is_file()]
    if absent:
        raise ValueError(f"inputs: {len(absent)} local shard(s) do not exist: {absent[:5]}")
    names: dict[str, list[str]] = {}
    for url in urls:
        names.setdefault(target_name(url), []).append(url)
    clashes = {n: us for n, us in names.items() if len(us) > 1}
    if clashes:
        raise ValueError(f"inputs: shards with the same name would write the same output shard: {clashes}")
    unsafe = [n for n in names if not SAFE_SHARD_NAME.fullmatch(n) or n == MANIFEST]
    if unsafe:
        raise ValueError(f"inputs: output names {unsafe} are not plain file names (letters, digits, `._-`)")
    return urls


class ShardListDataModule(L.LightningDataModule):
    """The shards to annotate, one per predict step.

    inputs: paths with brace ranges, ``pipe:`` commands, URLs, or a folder written by ``convert-llava`` or
    ``annotate`` (the shards its ``manifest.json`` lists), or a list of these; with ``synthetic`` and no inputs,
    the built-in shapes shards (train and val), generated by ``prepare_data`` when missing.
    """

    def __init__(self, inputs: str | list[str] | None = None, synthetic: SyntheticShapes | None = None) -> None:
        super().__init__()
        self.synthetic = synthetic
        self.inputs = shard_inputs(inputs)
        if not self.inputs and synthetic is not None:
            self.inputs = synthetic.split_urls("train") + synthetic.split_urls("val")
        if not self.inputs:
            raise ValueError("ShardListDataModule: `inputs` names no shards (and no `synthetic` data is set)")

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.write()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.inputs, batch_size=1, collate_fn=_first)


class AnnotateJob(L.LightningModule):
    """Annotates whole shards.

    Args:
        encoder: the vision encoder whose space the MaskInversion embeddings live in (the training recipe's).
        annotator: proposer + MaskInversion settings.
        output_dir: where annotated shards (and one ``<shard>.report.json`` each) are written.
        batch_size: images per annotator call.
    """

    def __init__(self, *, encoder: VisionEncoder, annotator: ObjectAnnotator, output_dir: str, batch_size: int = 8) -> None:
        super().__init__()
        self.encoder = encoder
        self.annotator = annotator
        self.output_dir = Path(output_dir)
        self.batch_size = batch_size
        self.transform = ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std)

    def predict_step(self, url: str, batch_idx: int) -> ShardReport:
        target = self.output_dir / target_name(url)
        if target.exists() and _report_path(target).exists():
            return ShardReport(url, skipped_existing=True)
        report = ShardReport(url)
        try:
            samples = list(self._read(url, report))
        except Exception as error:  # noqa: BLE001 - a truncated or unreadable shard is reported, not fatal
            report.error = f"{type(error).__name__}: {error}"
            log.error("annotate: skipped input shard %s (read %d samples before): %s", url, report.samples_in, error)
            _write_json(_report_path(target), report.__dict__)
            return report
        pending = [s for s in samples if "out" not in s]
        with meter(len(pending), target.name, unit="img", leave=False) as progress:
            self._annotate(pending, progress)
        report.samples_out, report.annotated = len(samples), len(pending)
        _write_json(_report_path(target), report.__dict__)  # before the shard: a shard on disk always has one
        write_shard(target, [s["out"] for s in samples])
        return report

    def _read(self, url: str, report: ShardReport) -> Iterator[dict[str, Any]]:
        """Samples of one shard: ``out`` set for those passed through, the decoded image for those to annotate."""
        used: set[str] = set()
        for raw in iterate_shard(url):
            report.samples_in += 1
            raw = sanitise(raw, used, report)
            images = [k for k in raw if not k.startswith("__") and k.rsplit(".", 1)[-1] in IMAGE_KEYS]
            if len(images) != 1:
                report.text_only += not images
                report.multi_image += len(images) > 1
                yield {"out": raw}
                continue
            try:
                decoded = decode_sample({k: v for k, v in raw.items() if k in (images[0], "json", MASKS_KEY)})
                if not isinstance(decoded.get("json", {}), dict):
                    raise ValueError(f"json is a {type(decoded['json']).__name__}, not an object")
                yield {"raw": raw, "image": decoded[images[0]], "record": decoded.get("json", {}),
                       "masks": decoded.get(MASKS_KEY)}
            except Exception as error:  # noqa: BLE001 - any undecodable image is skipped and listed
                report.corrupt.append(f"{raw['__key__']}: {type(error).__name__}: {error}")
                log.warning("annotate: skipped %s in %s: %s", raw["__key__"], url, error)

    def _given(self, chunk: list[dict[str, Any]]) -> tuple[torch.Tensor, ObjectMasks | None]:
        pixels, masks = [], []
        for sample in chunk:
            given = sample["masks"]
            if given is not None:
                given = unpack_masks(given, int(sample["record"]["mask_size"][1]))
            p, m = self.transform(sample["image"], given)
            pixels.append(p)
            masks.append(m)
        pixels = torch.stack(pixels).to(self.device)
        if all(m is None for m in masks):
            return pixels, None
        most = max(m.shape[0] for m in masks if m is not None)
        stacked = torch.zeros(len(chunk), most, *pixels.shape[-2:], dtype=torch.bool)
        for i, m in enumerate(masks):
            if m is not None:
                stacked[i, : m.shape[0]] = m
        valid = stacked.flatten(2).any(-1)
        return pixels, ObjectMasks(stacked.to(self.device), valid.float().to(self.device), valid.to(self.device))

    def _annotate(self, samples: list[dict[str, Any]], progress: tqdm | LineMeter) -> None:
        """Sets each sample's ``out``: its members plus masks, embeddings and the objects in its JSON."""
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            pixels, given = self._given(chunk)
            objects = self.annotator(self.encoder, pixels, given)
            for i, sample in enumerate(chunk):
                sample["out"] = self._encode(sample, objects, i)
            progress.update(len(chunk))

    def _encode(self, sample: dict[str, Any], objects: ObjectMasks, i: int) -> dict[str, Any]:
        keep = objects.valid[i].cpu()
        masks = self.transform.to_original(objects.masks[i][keep.to(objects.masks.device)].cpu(), sample["image"].size)
        embeddings = objects.embeddings[i][keep.to(objects.embeddings.device)].float().cpu().numpy().astype(np.float16)
        record = dict(sample["record"])
        record["mask_size"] = [sample["image"].size[1], sample["image"].size[0]]
        record["objects"] = [
            {"box": _box(mask), "score": float(score)} for mask, score in zip(masks, objects.scores[i][keep.to(objects.scores.device)].tolist(), strict=True)
        ]
        record["annotation"] = {
            "by": self.annotator.description, "encoder": type(self.encoder).__name__, "version": ANNOTATION_VERSION,
        }
        out = {k: v for k, v in sample["raw"].items() if k not in ("json", MASKS_KEY, EMBEDDINGS_KEY)}
        out.update({"json": json.dumps(record).encode(), MASKS_KEY: pack_masks(masks.numpy()),
                    EMBEDDINGS_KEY: encode_npy(embeddings)})
        return out

    def on_predict_start(self) -> None:
        """Rank 0 removes the partial files a killed run left for these inputs before any rank writes."""
        inputs = getattr(self.trainer.datamodule, "inputs", None)
        if self.trainer.is_global_zero and inputs is not None and self.output_dir.is_dir():
            for url in inputs:
                name = target_name(url)
                for leftover in [*self.output_dir.glob(f".{name}.tmp-*"), self.output_dir / f".{name}.report.json.tmp"]:
                    leftover.unlink(missing_ok=True)
        self.trainer.strategy.barrier()

    def on_predict_end(self) -> None:
        """Rank 0 writes the folder's manifest once every rank has finished its shards."""
        self.trainer.strategy.barrier()
        inputs = getattr(self.trainer.datamodule, "inputs", None)
        if self.trainer.is_global_zero and inputs is not None:
            annotation = {"by": self.annotator.description, "encoder": type(self.encoder).__name__,
                          "version": ANNOTATION_VERSION}
            write_manifest(self.output_dir, inputs, annotation)


def sanitise(raw: dict[str, Any], used: set[str], report: ShardReport) -> dict[str, Any]:
    """A sample whose key and member names are safe tar member names, its key unique within the shard.

    The reader takes the key from the member name up to the first dot of its last part, so a key may hold
    ``/`` and ``..`` (a path on extraction); those and other odd characters become ``_``. Members whose
    extension is not a plain dotted name are dropped and listed.
    """
    key = UNSAFE_KEY.sub("_", str(raw.get("__key__", "")))[:120] or "_"
    unique = key
    for n in range(1, len(used) + 2):  # at most len(used) names are taken
        if unique not in used:
            break
        unique = f"{key}_{n}"
    used.add(unique)
    report.renamed_keys += unique != raw.get("__key__")
    out: dict[str, Any] = {"__key__": unique}
    for name, value in raw.items():
        if name.startswith("__"):
            continue
        if SAFE_EXTENSION.fullmatch(name):
            out[name] = value
        else:
            report.dropped_members.append(f"{unique}.{UNSAFE_KEY.sub('_', name)}")
    return out


def _report_path(target: Path) -> Path:
    return target.with_name(target.name + ".report.json")


def _write_json(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(content, indent=1))
    tmp.replace(path)


def write_manifest(output_dir: Path, inputs: list[str], annotation: dict[str, Any]) -> dict[str, Any]:
    """``output_dir/manifest.json`` from the shard reports: every finished shard of ``inputs`` with its samples,
    the inputs skipped as unreadable, and ``complete`` when every input has its shard."""
    shards: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for url in inputs:
        target = output_dir / target_name(url)
        report_path = _report_path(target)
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        if report is not None and not report.get("error") and target.is_file():
            shards[target.name] = {
                "samples": report["samples_out"], "bytes": target.stat().st_size, "source": url,
                **{k: report.get(k, 0) for k in ("annotated", "text_only", "multi_image")},
                "corrupt": len(report.get("corrupt", [])),
            }
        elif report is not None and report.get("error"):
            failed[target.name] = {"source": url, "error": report["error"]}
    manifest = {
        "samples": sum(i["samples"] for i in shards.values()), "shards": shards, "complete": len(shards) == len(inputs),
        "failed": failed, "annotation": annotation,
    }
    _write_json(output_dir / MANIFEST, manifest)
    return manifest


def summary(reports: list[ShardReport]) -> str:
    """One line for the job's end, naming the input shards that could not be read."""
    done = [r for r in reports if not r.skipped_existing and r.error is None]
    failed = [r for r in reports if r.error is not None]
    line = (
        f"annotated {len(done)} shard(s), skipped {sum(r.skipped_existing for r in reports)} finished; "
        f"{sum(r.samples_in for r in done)} samples in, {sum(r.samples_out for r in done)} out "
        f"({sum(r.annotated for r in done)} annotated, {sum(r.text_only for r in done)} text-only and "
        f"{sum(r.multi_image for r in done)} multi-image passed through), {sum(len(r.corrupt) for r in done)} corrupt"
    )
    if failed:
        line += f"; {len(failed)} unreadable input shard(s) skipped: " + "; ".join(f"{r.shard} ({r.error})" for r in failed)
    return line


def _box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
