"""Shard specs -> shard URLs, with their sample counts where a manifest gives them.

A spec is a path with brace ranges (``x/shard-{000000..000041}.tar``), a glob (``x/*.tar``), a directory,
a ``pipe:`` command or a URL, or a list of those. A **directory** means the shards its ``manifest.json`` lists
(``{"shards": {"<name>.tar": {"samples": N, ...}, ...}}``, as ``tokencompose data convert-llava`` writes it),
with their sample counts; a directory without ``manifest.json`` means its ``*.tar`` in natural order, with a
warning and no counts. Local shards must exist: a missing one is an error naming the key, before any reading.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webdataset.shardlists import expand_urls

from tokencompose.data.processing import natural_key

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SHOWN = 3  # missing shards named in an error; the rest are counted


@dataclass
class Shards:
    """Shard URLs in reading order, and samples per URL where a manifest says."""

    urls: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def samples(self) -> int | None:
        """Total samples, or None unless every shard's count is known."""
        if not self.urls or any(url not in self.counts for url in self.urls):
            return None
        return sum(self.counts[url] for url in self.urls)

    def __add__(self, other: Shards) -> Shards:
        return Shards(self.urls + other.urls, {**self.counts, **other.counts})


def is_local(url: str) -> bool:
    return not url.startswith("pipe:") and "://" not in url


def read_manifest(directory: Path, key: str) -> dict[str, int]:
    """``manifest.json`` of a converted directory -> samples per shard name, validated."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{key}: cannot read {path}: {error}") from error
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, dict) or not shards:
        raise ValueError(f"{key}: {path} lists no shards (expected {{\"shards\": {{\"<name>.tar\": {{\"samples\": N}}}}}}); "
                         "is it a directory written by `tokencompose data convert-llava`?")
    counts: dict[str, int] = {}
    for name, info in shards.items():
        samples = info.get("samples") if isinstance(info, dict) else None
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0 or "/" in name:
            raise ValueError(f"{key}: {path}: shard {name!r} has no valid 'samples' count (got {info!r})")
        counts[name] = samples
    return counts


def _directory(directory: Path, key: str) -> Shards:
    if not (directory / MANIFEST).is_file():
        urls = sorted((str(p) for p in directory.glob("*.tar")), key=natural_key)
        if not urls:
            raise ValueError(f"{key}: directory {directory} has neither {MANIFEST} nor any *.tar shard")
        log.warning("%s: %s has no %s; reading its %d *.tar in name order, sample counts unknown",
                    key, directory, MANIFEST, len(urls))
        return Shards(urls)
    counts = read_manifest(directory, key)
    urls = [str(directory / name) for name in sorted(counts, key=natural_key)]
    return Shards(urls, {url: counts[Path(url).name] for url in urls})


def _manifest_counts(urls: list[str]) -> dict[str, int]:
    """Counts for local shards listed by a ``manifest.json`` next to them (unreadable manifests give none)."""
    counts: dict[str, int] = {}
    for folder in {str(Path(url).parent) for url in urls if is_local(url)}:
        try:
            listed = read_manifest(Path(folder), "manifest")
        except ValueError:
            continue
        counts.update({url: listed[Path(url).name] for url in urls
                       if is_local(url) and str(Path(url).parent) == folder and Path(url).name in listed})
    return counts


def _one(spec: str, key: str) -> Shards:
    if is_local(spec) and Path(spec).is_dir():
        return _directory(Path(spec), key)
    if is_local(spec) and any(c in spec for c in "*?["):
        urls = sorted(glob.glob(spec), key=natural_key)
        if not urls:
            raise ValueError(f"{key}: the pattern {spec!r} matches no file")
        return Shards(urls, _manifest_counts(urls))
    urls = expand_urls(spec)
    missing = [url for url in urls if is_local(url) and not Path(url).is_file()]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
        raise ValueError(f"{key}: {len(missing)} of {len(urls)} shard(s) do not exist: {shown}. Name existing "
                         f"shards, or a directory written by `tokencompose data convert-llava` (its {MANIFEST} lists them)")
    return Shards(urls, _manifest_counts(urls))


def resolve_shards(spec: str | list[str] | None, key: str) -> Shards:
    """A spec (or list of specs) -> ``Shards``; ``key`` (e.g. ``data.train``) is named in every error."""
    if spec is None:
        return Shards()
    specs: list[Any] = [spec] if isinstance(spec, str) else list(spec)
    shards = Shards()
    for one in specs:
        if not isinstance(one, str) or not one:
            raise ValueError(f"{key}: expected shard paths, patterns or directories, got {one!r}")
        shards = shards + _one(one, key)
    return shards
