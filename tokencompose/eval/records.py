"""Reading benchmark shard records for scoring without ever failing on bad data, and counting what was wrong.

Every problem (a shard given twice, an unreadable or truncated shard, a sample without a readable JSON record,
a key seen twice, a record that cannot be scored) is counted by reason, with the first few places named, so the
report in ``scores.json`` and the log say exactly what was left out and why.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from tokencompose.data.shards import iterate_shard

log = logging.getLogger(__name__)


class Tally:
    """Problems by reason: a count and the first ``keep`` places (shard, key or record id) of each."""

    def __init__(self, keep: int = 10) -> None:
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.places: dict[str, list[str]] = {}

    def add(self, reason: str, place: str, count: int = 1) -> None:
        self.counts[reason] += count
        shown = self.places.setdefault(reason, [])
        if len(shown) < self.keep:
            shown.append(place)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {reason: {"count": n, "examples": self.places[reason]} for reason, n in self.counts.items()}

    def log(self, what: str) -> None:
        for reason, n in self.counts.items():
            log.warning("%s: %d x %s, e.g. %s", what, n, reason, self.places[reason])


def unique_shards(urls: list[str], tally: Tally) -> list[str]:
    """``urls`` in order, each shard once: a local file named twice (in any spelling) is read once."""
    seen: set[str] = set()
    out = []
    for url in urls:
        path = Path(url)
        identity = str(path.resolve()) if "://" not in url and not url.startswith("pipe:") and path.exists() else url
        if identity in seen:
            tally.add("shard given twice (read once)", url)
            continue
        seen.add(identity)
        out.append(url)
    return out


def load_records(shards: list[str], tally: Tally | None = None) -> dict[str, dict[str, Any]]:
    """Sample key -> its JSON record (references and metadata for scoring), without decoding images. A shard
    that cannot be read to its end (``iterate_shard`` raises for a cut or corrupt tar) keeps the records read
    before the fault; bad samples are skipped; a key seen again keeps its first record. Everything left out is
    counted in ``tally``."""
    tally = tally if tally is not None else Tally()
    records: dict[str, dict[str, Any]] = {}
    for url in shards:
        try:
            for raw in iterate_shard(url):
                _add(records, raw, url, tally)
        except Exception as error:  # noqa: BLE001 - a damaged shard is reported, never fatal
            tally.add(UNREADABLE, f"{url}: {type(error).__name__}: {error}")
            continue
    return records


UNREADABLE = "unreadable shard (records after the fault are missing)"


def _add(records: dict[str, dict[str, Any]], raw: dict[str, Any], url: str, tally: Tally) -> None:
    key = raw.get("__key__")
    place = f"{url}:{key}"
    if "json" not in raw:
        tally.add("sample without a json record", place)
        return
    try:
        record = json.loads(raw["json"])
    except (ValueError, UnicodeDecodeError):
        tally.add("corrupt json record", place)
        return
    if not isinstance(record, dict):
        tally.add("json record is not an object", place)
    elif key in records:
        tally.add("duplicate sample key (first kept)", place)
    else:
        records[key] = record
