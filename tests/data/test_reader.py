"""Truncated and corrupt tars, and repeated keys: reported with reason, shard and samples lost, never silent."""

import io
import json
import tarfile

import pytest

from tokencompose.data import ShardError, ShardStream, iterate_shard, read_shard, write_shard

MEMBER = 512 + 1024  # header + 700 bytes of data padded to whole blocks


def shard_bytes(keys: list[str]) -> bytes:
    """A tar of samples with two members each (json, txt), every member exactly ``MEMBER`` bytes long."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|") as archive:
        for key in keys:
            for extension in ("json", "txt"):
                data = json.dumps({"k": key}).encode().ljust(700)
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def problems_of(path) -> tuple[list[str], list]:
    found = []
    keys = [s["__key__"] for s in read_shard(str(path), found.append)]
    return keys, found


CUTS = {
    "member boundary": 3 * MEMBER,  # after a.json a.txt b.json: b may be incomplete, so it is dropped too
    "inside a header": 3 * MEMBER + 100,
    "inside member data": 3 * MEMBER + 512 + 300,
}


@pytest.mark.parametrize("where", list(CUTS))
def test_a_cut_tar_is_reported_with_the_samples_before_it(tmp_path, where):
    shard = tmp_path / "cut.tar"
    shard.write_bytes(shard_bytes(["a", "b", "c", "d"])[: CUTS[where]])
    keys, found = problems_of(shard)
    assert keys == ["a"]
    assert [(p.reason, p.position, p.fatal) for p in found] == [("truncated shard", 1, True)]
    with pytest.raises(ShardError, match="truncated shard"):  # without a handler, a cut tar is an error
        list(iterate_shard(str(shard)))


def test_a_whole_tar_reports_nothing(tmp_path):
    shard = tmp_path / "whole.tar"
    shard.write_bytes(shard_bytes(["a", "b", "c"]))
    assert problems_of(shard) == (["a", "b", "c"], [])


def test_garbage_and_missing_files_are_reported(tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x01" * 2048)
    assert [p.reason for p in problems_of(garbage)[1]] == ["corrupt tar"]
    assert [p.reason for p in problems_of(tmp_path / "missing.tar")[1]] == ["unreadable shard"]
    corrupt = bytearray(shard_bytes(["a", "b", "c"]))
    corrupt[3 * MEMBER : 4 * MEMBER] = b"\x01" * 512 * 3  # b.txt's header: b may be incomplete, so it is dropped
    (tmp_path / "mid.tar").write_bytes(bytes(corrupt))
    keys, found = problems_of(tmp_path / "mid.tar")
    assert keys == ["a"] and [(p.reason, p.position, p.fatal) for p in found] == [("corrupt tar", 1, True)]


@pytest.mark.parametrize("keys", [["a", "b", "b", "c"], ["a", "b", "a", "c"]], ids=["adjacent", "apart"])
def test_a_repeated_key_drops_that_sample_and_reading_goes_on(tmp_path, keys):
    shard = tmp_path / "dup.tar"
    shard.write_bytes(shard_bytes(keys))
    read, found = problems_of(shard)
    assert read == list(dict.fromkeys(keys))  # the first of each key, in order; nothing after it is lost
    assert [(p.reason, p.fatal) for p in found] == [("duplicate key", False)]


def test_the_stream_counts_the_samples_a_cut_shard_lost_from_its_manifest_count(tmp_path, caplog):
    shard = tmp_path / "cut.tar"
    shard.write_bytes(shard_bytes(["a", "b", "c", "d", "e"])[: 3 * MEMBER])
    stream = ShardStream([str(shard)], lambda s: {"key": s["__key__"]}, batch_size=1, shuffle=False,
                         counts={str(shard): 5})
    assert [s["key"] for s in stream] == ["a"]
    assert stream.skipped == {"truncated shard": 4}
    assert "cut at a member boundary" in caplog.text and "4 sample(s) lost" in caplog.text and str(shard) in caplog.text


def test_the_stream_counts_a_shard_shorter_than_its_manifest(tmp_path):
    shard = tmp_path / "short.tar"
    write_shard(shard, [{"__key__": k, "txt": b"x"} for k in "abc"])
    stream = ShardStream([str(shard)], lambda s: {"key": s["__key__"]}, batch_size=1, shuffle=False,
                         counts={str(shard): 5})
    assert len(list(stream)) == 3 and stream.skipped == {"fewer samples than manifest": 2}
