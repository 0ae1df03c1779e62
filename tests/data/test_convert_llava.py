import json

import numpy as np
import pytest
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
    assert manifest["complete"] and sorted(manifest["shards"]) == sorted(p.name for p in out.glob("*.tar"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary or lock file left
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


def image_file(path, seed=0, format=None):
    array = (np.random.default_rng(seed).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(path, format=format)
    return path


def conversation():
    return [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "a thing"}]


def all_tar_bytes(out):
    return b"".join(p.read_bytes() for p in out.glob("*.tar"))


def test_paths_leaving_the_images_folder_are_refused_listed_and_never_read(tmp_path):
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    secret = image_file(tmp_path / "secret.png", seed=1)  # a readable image beside, not under, --images
    image_file(images / "coco" / "ok.png", seed=2)
    (images / "escape.png").symlink_to(secret)
    (images / "alias").symlink_to(images / "coco")  # a symlink that stays inside is fine
    records = [{"id": name, "image": path, "conversations": conversation()} for name, path in [
        ("ok", "coco/ok.png"), ("dotdot", "../secret.png"), ("absolute", str(secret)),
        ("symlink", "escape.png"), ("alias", "alias/ok.png"), ("inside_dotdot", "coco/../coco/ok.png"),
    ]]
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "shards"
    report = convert_llava(str(source), str(images), str(out), workers=1)
    refused = {r["id"]: r for r in report.refused_images}
    assert set(refused) == {"dotdot", "absolute", "symlink"} and refused["dotdot"]["image"] == "../secret.png"
    assert refused["absolute"]["reason"] == "absolute path"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["refused_images"] == report.refused_images and manifest["samples"] == report.samples == 3
    assert secret.read_bytes() not in all_tar_bytes(out)
    ids = {json.loads(raw["json"])["id"] for raw in iterate_shard(str(out / "shard-000000.tar"))}
    assert ids == {"ok", "alias", "inside_dotdot"}


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": "a"}', r"expected a JSON list of samples, got dict"),
    ('[{"id": "a", "conversations": [', r"not valid JSON: .*line 1"),
    ('[{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}, {"conversations": [{"from": "human", "value": "x"}]}]',
     r"1 malformed record\(s\), nothing written: record 1: `id` must be"),
    ('[{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}, {"id": "b7", "image": ["x.jpg"], "conversations": []}]',
     r"record 1 \(id 'b7'\): `image` must be a path"),
    ('[{"id": 5, "image": "x.jpg"}]', r"record 0 \(id 5\): `conversations` must be a non-empty list"),
    ('[{"id": "a", "conversations": [{"from": "human"}]}]', r"record 0 \(id 'a'\): conversations\[0\] must be an object"),
    ('[3]', r"record 0: expected an object, got int"),
])
def test_malformed_json_is_one_error_naming_the_record_before_anything_is_written(tmp_path, content, message):
    source = tmp_path / "llava.json"
    source.write_text(content)
    with pytest.raises(ValueError, match=f"llava.json: (.*)?{message}"):
        convert_llava(str(source), str(tmp_path), str(tmp_path / "shards"), workers=1)
    assert not (tmp_path / "shards").exists()


def test_every_malformed_record_is_counted_in_the_one_error(tmp_path):
    source = tmp_path / "llava.json"
    source.write_text(json.dumps([{"id": f"r{i}"} for i in range(15)]))
    with pytest.raises(ValueError, match=r"15 malformed record\(s\).*record 9 \(id 'r9'\).*\.\.\. and 5 more"):
        convert_llava(str(source), str(tmp_path), str(tmp_path / "shards"), workers=1)


def test_formats_training_cannot_decode_become_png(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    image_file(images / "a.gif", format="GIF")
    image_file(images / "b.jpg", format="JPEG")
    records = [{"id": "gif", "image": "a.gif", "conversations": conversation()},
               {"id": "jpeg", "image": "b.jpg", "conversations": conversation()}]
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(records))
    report = convert_llava(str(source), str(images), str(tmp_path / "shards"), workers=1)
    gif, jpeg = iterate_shard(str(tmp_path / "shards" / "shard-000000.tar"))
    assert "png" in gif and decode_sample(gif)["png"].size == (24, 20) and report.reencoded_images == ["gif"]
    assert jpeg["jpg"] == (images / "b.jpg").read_bytes()
