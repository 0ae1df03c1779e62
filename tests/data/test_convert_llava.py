import json

import numpy as np
from PIL import Image

from tokencompose.data import iterate_shard
from tokencompose.data.convert_llava import convert_llava, sample_key
from tokencompose.data.shards import decode_sample


def fabricate(tmp_path, count=12):
    images = tmp_path / "images" / "coco"
    images.mkdir(parents=True)
    records = []
    for i in range(count):
        record = {"id": f"img.{i}/x", "conversations": [{"from": "human", "value": "<image>\nwhat is it?"},
                                                        {"from": "gpt", "value": f"thing {i}"}]}
        if i % 4 == 3:  # text-only, multi-turn
            record = {"id": f"text{i}", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                                                          {"from": "human", "value": "more"}, {"from": "gpt", "value": "sure"}]}
        elif i == 5:
            record["image"] = "coco/missing.jpg"
        elif i == 6:
            (images / "broken.jpg").write_bytes(b"not an image")
            record["image"] = "coco/broken.jpg"
        else:
            array = (np.random.default_rng(i).random((40, 30, 3)) * 255).astype(np.uint8)
            Image.fromarray(array).save(images / f"{i}.jpg", quality=90)
            record["image"] = f"coco/{i}.jpg"
        records.append(record)
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(records))
    return source, tmp_path / "images", records


def test_convert_round_trip_keeps_bytes_and_reports_missing_and_corrupt(tmp_path):
    source, images, records = fabricate(tmp_path)
    out = tmp_path / "shards"
    report = convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert report.missing_images == ["img.5/x"] and report.corrupt_images == ["img.6/x"]
    assert manifest["samples"] == report.samples == 10 and manifest["num_shards"] == report.shards > 1
    seen = {}
    for shard in sorted(out.glob("shard-*.tar")):
        for raw in iterate_shard(str(shard)):
            seen[json.loads(raw["json"])["id"]] = raw
    assert set(seen) == {r["id"] for r in records} - {"img.5/x", "img.6/x"}
    assert seen["img.0/x"]["jpg"] == (images / "coco" / "0.jpg").read_bytes()  # original bytes, no re-encode
    assert "jpg" not in seen["text3"] and len(json.loads(seen["text3"]["json"])["conversations"]) == 4
    assert decode_sample(seen["img.0/x"])["jpg"].size == (30, 40)
    assert "." not in seen["img.0/x"]["__key__"] and sample_key("a.b/c", 7) == "000000007_a_b_c"


def test_rerun_skips_finished_shards(tmp_path):
    source, images, _ = fabricate(tmp_path)
    out = tmp_path / "shards"
    convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    first = sorted(out.glob("shard-*.tar"))
    stamps = [p.stat().st_mtime_ns for p in first]
    first[-1].unlink()
    report = convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    assert [p.stat().st_mtime_ns for p in first[:-1]] == stamps[:-1] and first[-1].exists()
    assert report.samples == 10
