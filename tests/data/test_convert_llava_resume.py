"""convert-llava across runs: a fingerprinted plan, `kill -9` and rerun, workers that die with the converter."""

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.test_convert_llava import fabricate
from tokencompose.data import iterate_shard
from tokencompose.data.convert_llava import convert_llava

MODULE = Path(__file__).resolve().parents[2] / "tokencompose" / "data" / "convert_llava.py"


def listed_ids(out):
    """Record ids per shard as read from the shards the manifest lists, and the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    ids = [json.loads(raw["json"])["id"] for name in manifest["shards"] for raw in iterate_shard(str(out / name))]
    return ids, manifest


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_rerun_with_other_inputs_is_refused_and_overwrite_starts_over(tmp_path):
    source, images, records = fabricate(tmp_path)
    out = tmp_path / "shards"
    convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    with pytest.raises(ValueError, match=r"other inputs \(--shard-mb was 0.0038147, now 0.00762939\).*--overwrite"):
        convert_llava(str(source), str(images), str(out), shard_bytes=8000, workers=1)
    source.write_text(json.dumps(records[:-1]))
    with pytest.raises(ValueError, match=r"other inputs \(the JSON file's content differs\)"):
        convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    source.write_text(json.dumps(records))
    (images / "coco" / "0.jpg").write_bytes((images / "coco" / "0.jpg").read_bytes() + b"\0" * 50)
    with pytest.raises(ValueError, match=r"other inputs \(images appeared, vanished or changed size\)"):
        convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before  # nothing touched by a refused run
    report = convert_llava(str(source), str(images), str(out), shard_bytes=8000, workers=1, overwrite=True)
    ids, manifest = listed_ids(out)
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(manifest["shards"]) and len(manifest["shards"]) < len(before)
    assert sorted(ids) == sorted(r["id"] for r in records if r["id"] not in ("img.5/x", "img.6/x")) and report.samples == 10


def test_shards_of_unknown_origin_are_refused(tmp_path):
    source, images, _ = fabricate(tmp_path)
    out = tmp_path / "shards"
    out.mkdir()
    (out / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="holds shards but no manifest.json"):
        convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)


def test_a_shard_the_manifest_does_not_list_is_rewritten(tmp_path):
    """The state a kill leaves between renaming a shard into place and rewriting the manifest."""
    source, images, _ = fabricate(tmp_path)
    out = tmp_path / "shards"
    convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    ids, manifest = listed_ids(out)
    dropped = sorted(manifest["shards"])[1]
    del manifest["shards"][dropped]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / f".{dropped}.tmp-12345").write_bytes(b"partial")  # and a killed worker's partial shard
    report = convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    again, manifest = listed_ids(out)
    assert sorted(again) == sorted(ids) and len(again) == len(set(again)) == report.samples == manifest["samples"] == 10
    assert manifest["complete"] and leftovers(out) == []


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    source, images, _ = fabricate(tmp_path)
    out = tmp_path / "shards"
    out.mkdir()
    with open(out / ".convert.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another convert-llava is writing here"):
            convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)


# The converter in a child process, slowed down per image so it can be killed mid-run. It loads the module from
# its file (the package's __init__ would import torch and take tens of seconds on a busy machine); with the
# fork start method the workers run the slowed function too.
SLOW_RUN = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("convert_llava_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
real = module.Image.open
def slow(*args, **kwargs):
    time.sleep(0.15)
    return real(*args, **kwargs)
module.Image.open = slow
module.convert_llava(sys.argv[2], sys.argv[3], sys.argv[4], shard_bytes=int(sys.argv[5]), workers=2)
"""


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie no init reaps counts as dead)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_kill_9_then_rerun_lists_every_shard_and_sample_once_and_workers_die_with_the_converter(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i in range(24):
        array = (np.random.default_rng(i).random((24, 24, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(images / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [{"from": "human", "value": "<image>"},
                                                                               {"from": "gpt", "value": str(i)}]})
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "shards"
    shard_bytes = 2 * (images / "0.png").stat().st_size  # two samples a shard
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        run = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(MODULE), str(source), str(images), str(out),
                                str(shard_bytes)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert wait_for(lambda: any(out.glob("shard-*.tar")) and len(children(run.pid)) >= 2, 120), log.read_text()
        workers = children(run.pid)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert len(list(out.glob("shard-*.tar"))) < 12  # killed mid-run
    assert wait_for(lambda: not any(alive(w) for w in workers), 5), f"workers {workers} outlived the converter"
    report = convert_llava(str(source), str(images), str(out), shard_bytes=shard_bytes, workers=2)
    ids, manifest = listed_ids(out)
    assert sorted(ids) == sorted(r["id"] for r in records) and len(ids) == len(set(ids)) == manifest["samples"] == report.samples
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(manifest["shards"]) and len(manifest["shards"]) == 12
    assert all(info["samples"] == 2 for info in manifest["shards"].values()) and manifest["complete"]
    assert leftovers(out) == []  # partial shards, the manifest's temporary file and the lock are gone
