"""Reading one WebDataset shard into raw samples, with every way the tar can fall short reported.

``tarfile`` in stream mode ends quietly when a tar is cut at a member boundary or inside a header, and
webdataset's grouping gives up on the rest of a shard at a repeated key. Here each of those is a
``ShardProblem`` (reason, detail, where): a repeated key drops that sample and reading goes on; anything that
ends the shard early drops the sample being assembled, whose members may be incomplete.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from webdataset.gopen import gopen

META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members, never part of a sample
NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's rule: the key ends at the basename's first dot


@dataclass(frozen=True)
class ShardProblem:
    """``position``: samples of the shard read (used or dropped) before it; ``fatal``: the rest is lost."""

    reason: str  # "unreadable shard", "truncated shard", "corrupt tar" or "duplicate key"
    detail: str
    position: int
    fatal: bool


class ShardError(OSError):
    """A shard problem raised to a caller that gave no handler; ``reason`` and ``problem`` say which."""

    def __init__(self, url: str, problem: ShardProblem) -> None:
        super().__init__(f"{url}: {problem.reason} after {problem.position} samples: {problem.detail}")
        self.reason = problem.reason
        self.problem = problem


def split_name(name: str) -> tuple[str, str] | None:
    """A member name -> (sample key, lower-case extension), or None for metadata and extension-less names."""
    if META.match(name):
        return None
    match = NAME.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def _recording(blocks: list[bytes]) -> type[tarfile.TarInfo]:
    """A TarInfo class (``tarfile.open(tarinfo=...)``) that keeps each header block tarfile rejects: the last
    one says how the archive ended (512 zero bytes: the end-of-archive marker; anything else: cut or corrupt)."""

    class Recording(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            try:
                return super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError:
                blocks.append(buf)
                raise

    return Recording


def _ending(block: bytes | None) -> tuple[str, str] | None:
    """How a tar whose member loop ended without an error really ended (None: at its end-of-archive marker)."""
    if block is not None and len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
        return None
    if not block:
        return "truncated shard", "cut at a member boundary (no end-of-archive marker)"
    if len(block) < tarfile.BLOCKSIZE:
        return "truncated shard", f"cut inside a header ({len(block)} of {tarfile.BLOCKSIZE} bytes)"
    return "corrupt tar", "invalid member header"


class _Members:
    """(name, bytes) of a tar's regular files in order; once exhausted, ``problem`` says how it ended."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.problem: tuple[str, str] | None = None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        blocks: list[bytes] = []
        try:
            archive = tarfile.open(fileobj=self.stream, mode="r|*", tarinfo=_recording(blocks))
            for member in archive:
                if member.isreg():
                    yield member.name, archive.extractfile(member).read()
                archive.members = []  # stream mode would keep every header in memory
        except tarfile.ReadError as error:
            self.problem = ("truncated shard" if self._at_end() else "corrupt tar", str(error))
            return
        except Exception as error:  # noqa: BLE001 - I/O, decompression or pipe failures: the shard is unreadable
            self.problem = ("unreadable shard", f"{type(error).__name__}: {error}")
            return
        self.problem = _ending(blocks[-1] if blocks else None)

    def _at_end(self) -> bool:
        try:
            return self.stream.read(1) == b""
        except Exception:  # noqa: BLE001 - an unreadable rest is not "at the end"
            return False


def _raise_for(url: str) -> Callable[[ShardProblem], None]:
    def handler(problem: ShardProblem) -> None:
        raise ShardError(url, problem)

    return handler


def read_shard(url: str, on_problem: Callable[[ShardProblem], None] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__``, ``__url__``, extension -> bytes) of one shard: a path, ``pipe:`` command or URL.

    Each problem goes to ``on_problem``; without one it raises ``ShardError`` (after the samples before it).
    A key seen before in the shard (adjacent or not) is a ``duplicate key``: that sample is dropped.
    """
    report = on_problem if on_problem is not None else _raise_for(url)
    try:
        stream = gopen(url, "rb")
    except Exception as error:  # noqa: BLE001 - a missing file or failed command is reported, not raised here
        report(ShardProblem("unreadable shard", f"{type(error).__name__}: {error}", 0, fatal=True))
        return
    members = _Members(stream)
    sample: dict[str, Any] | None = None
    seen: set[str] = set()
    dropping: str | None = None  # the repeated key whose members are being skipped
    position = 0
    close_error: Exception | None = None
    try:
        for name, data in members:
            parts = split_name(name)
            if parts is None:
                continue
            key, extension = parts
            if sample is not None and key == sample["__key__"] and extension not in sample:
                sample[extension] = data
                continue
            if key == dropping:
                continue
            if sample is not None:  # a new key starts a new sample: the previous one is complete
                position += 1
                yield sample
                sample = None
            if key in seen:
                dropping = key
                report(ShardProblem("duplicate key", f"{key!r} appears again; that sample is dropped", position, False))
                position += 1
                continue
            dropping = None
            seen.add(key)
            sample = {"__key__": key, "__url__": url, extension: data}
    finally:  # runs on early exit too; a pipe's exit status only matters when the whole stream was read
        try:
            stream.close()
        except Exception as error:  # noqa: BLE001
            close_error = error
    problem = members.problem
    if problem is None and close_error is not None:
        problem = ("unreadable shard", f"{type(close_error).__name__}: {close_error}")
    if problem is not None:
        report(ShardProblem(problem[0], problem[1], position, fatal=True))
    elif sample is not None:
        yield sample
