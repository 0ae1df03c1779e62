"""Each converter on small fabricated files in the benchmark's native format; scoring and server exports."""

import base64
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from tokencompose.data import iterate_shard
from tokencompose.eval.benchmarks import BENCHMARKS, convert_benchmark, get_benchmark
from tokencompose.eval.runner import load_records


def jpeg(seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((24, 32, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def records_of(out):
    return sorted(load_records([str(p) for p in sorted(out.glob("*.tar"))]).values(), key=lambda r: r["id"])


def test_vqav2_with_annotations_and_export(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "COCO_val2014_000000000042.jpg").write_bytes(jpeg())
    (tmp_path / "q.json").write_text(json.dumps({"data_subtype": "val2014", "questions": [
        {"question_id": 7, "image_id": 42, "question": "How many?"}]}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": [
        {"question_id": 7, "answers": [{"answer": "2"}] * 9 + [{"answer": "3"}]}]}))
    count = convert_benchmark("vqav2", str(tmp_path / "q.json"), str(tmp_path / "out"), str(images), str(tmp_path / "a.json"))
    (record,) = records_of(tmp_path / "out")
    assert count == 1 and record["references"] == ["2"] * 9 + ["3"]
    assert record["conversations"][0]["value"] == "<image>\nHow many?\nAnswer the question using a single word or phrase."
    raw = next(iterate_shard(str(next((tmp_path / "out").glob("*.tar")))))
    assert raw["jpg"] == (images / "COCO_val2014_000000000042.jpg").read_bytes()
    spec = get_benchmark("vqav2")
    metric = spec.scorer.metric()
    spec.scorer.update(metric, ["two"], [record])
    assert metric.compute().item() == pytest.approx(100.0)
    exported = json.loads(spec.export(tmp_path, ["2"], [record]).read_text())
    assert exported == [{"question_id": 7, "answer": "2"}]


def test_textvqa_vizwiz_gqa(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("abc.jpg", "VizWiz_val_00000001.jpg", "n123.jpg"):
        (images / name).write_bytes(jpeg())
    (tmp_path / "textvqa.json").write_text(json.dumps({"data": [{"question_id": 1, "image_id": "abc", "question": "What brand?",
                                                                 "answers": ["nike"] * 10}]}))
    (tmp_path / "vizwiz.json").write_text(json.dumps([{"image": "VizWiz_val_00000001.jpg", "question": "What is this?",
                                                       "answers": [{"answer": "unanswerable"}] * 10}]))
    (tmp_path / "gqa.json").write_text(json.dumps({"201": {"imageId": "n123", "question": "Is it red?", "answer": "no"}}))
    for name, file in (("textvqa", "textvqa.json"), ("vizwiz", "vizwiz.json"), ("gqa", "gqa.json")):
        assert convert_benchmark(name, str(tmp_path / file), str(tmp_path / name), str(images)) == 1
    (vizwiz,) = records_of(tmp_path / "vizwiz")
    assert "respond with 'Unanswerable'" in vizwiz["conversations"][0]["value"]
    spec = get_benchmark("vizwiz")
    metric = spec.scorer.metric()
    spec.scorer.update(metric, ["Unanswerable"], [vizwiz])
    assert metric.compute().item() == pytest.approx(100.0)
    assert json.loads(spec.export(tmp_path, ["unanswerable"], [vizwiz]).read_text())[0]["image"] == "VizWiz_val_00000001.jpg"
    (gqa,) = records_of(tmp_path / "gqa")
    metric = get_benchmark("gqa").scorer.metric()
    get_benchmark("gqa").scorer.update(metric, ["No."], [gqa])
    assert metric.compute().item() == pytest.approx(100.0)


def test_pope_jsonl(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "COCO_val2014_1.jpg").write_bytes(jpeg())
    lines = [{"question_id": i, "image": "COCO_val2014_1.jpg", "text": f"Is there a {o} in the image?", "label": label}
             for i, (o, label) in enumerate([("dog", "yes"), ("cat", "no")])]
    (tmp_path / "coco_pope_adversarial.json").write_text("\n".join(json.dumps(x) for x in lines))
    assert convert_benchmark("pope", str(tmp_path / "coco_pope_adversarial.json"), str(tmp_path / "out"), str(images)) == 2
    records = records_of(tmp_path / "out")
    assert {r["meta"]["category"] for r in records} == {"adversarial"}
    spec = get_benchmark("pope")
    metric = spec.scorer.metric()
    spec.scorer.update(metric, ["Yes, there is.", "No"], records)
    assert metric.compute()["accuracy"].item() == pytest.approx(100.0)


def test_mme_both_folder_layouts(tmp_path):
    root = tmp_path / "MME"
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN").mkdir()
    (root / "artwork" / "images" / "1.jpg").write_bytes(jpeg())
    (root / "artwork" / "questions_answers_YN" / "1.txt").write_text("Is this by Monet? Please answer yes or no.\tYes\n"
                                                                      "Is this by Dali? Please answer yes or no.\tNo\n")
    (root / "color").mkdir()
    (root / "color" / "5.png").write_bytes(jpeg())
    (root / "color" / "5.txt").write_text("Is the car red? Please answer yes or no.\tNo\nIs the car blue? Please answer yes or no.\tYes")
    assert convert_benchmark("mme", str(root), str(tmp_path / "out")) == 4
    records = records_of(tmp_path / "out")
    assert {r["meta"]["subtask"] for r in records} == {"artwork", "color"}
    spec = get_benchmark("mme")
    metric = spec.scorer.metric()
    by_id = {r["id"]: r for r in records}
    order = ["artwork-1-0", "artwork-1-1", "color-5-0", "color-5-1"]
    spec.scorer.update(metric, ["Yes", "No", "No", "No"], [by_id[i] for i in order])
    scores = metric.compute()
    assert scores["artwork"] == pytest.approx(200.0) and scores["color"] == pytest.approx(50.0 + 0.0)
    assert scores["perception"] == pytest.approx(250.0)


def test_scienceqa_img_subset(tmp_path):
    problems = {"1": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1, "image": "image.png",
                      "hint": "Look closely."},
                "2": {"question": "No image here", "choices": ["a", "b"], "answer": 0, "image": None, "hint": ""}}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    (tmp_path / "images" / "test" / "1").mkdir(parents=True)
    (tmp_path / "images" / "test" / "1" / "image.png").write_bytes(jpeg())
    assert convert_benchmark("scienceqa", str(tmp_path / "problems.json"), str(tmp_path / "out"), str(tmp_path / "images")) == 1
    (record,) = records_of(tmp_path / "out")
    assert record["conversations"][0]["value"] == (
        "<image>\nContext: Look closely.\nWhich is a mammal?\nA. frog\nB. whale\n"
        "Answer with the option's letter from the given choices directly.")
    assert record["references"] == "B"


def test_mmbench_tsv_is_asked_in_every_rotation(tmp_path):
    with (tmp_path / "mmbench.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"], delimiter="\t")
        writer.writeheader()
        writer.writerow({"index": 5, "question": "Which animal?", "hint": "nan", "A": "cat", "B": "dog", "C": "owl",
                         "D": "", "answer": "B", "category": "x", "image": base64.b64encode(jpeg()).decode()})
    assert convert_benchmark("mmbench", str(tmp_path / "mmbench.tsv"), str(tmp_path / "out")) == 3
    records = records_of(tmp_path / "out")
    # "dog" is B, then A (rotation 1: dog, owl, cat), then C (rotation 2: owl, cat, dog)
    assert [r["references"] for r in records] == ["B", "A", "C"]
    spec = get_benchmark("mmbench")
    metric = spec.scorer.metric()
    spec.scorer.update(metric, ["B", "A", "A"], records)
    assert metric.compute().item() == 0.0  # one rotation wrong: the question is wrong


def test_mmvet_export_only(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "v1.jpg").write_bytes(jpeg())
    (tmp_path / "mm-vet.json").write_text(json.dumps({"v1_0": {"imagename": "v1.jpg", "question": "Describe it.",
                                                               "answer": "a cat", "capability": ["rec"]}}))
    assert convert_benchmark("mmvet", str(tmp_path / "mm-vet.json"), str(tmp_path / "out"), str(tmp_path / "images")) == 1
    (record,) = records_of(tmp_path / "out")
    spec = get_benchmark("mmvet")
    assert spec.scorer is None and json.loads(spec.export(tmp_path, ["a cat"], [record]).read_text()) == {"v1_0": "a cat"}


def test_unknown_benchmark_is_named():
    with pytest.raises(ValueError, match="unknown benchmark 'vqa3'"):
        get_benchmark("vqa3")
    assert len(BENCHMARKS) == 11
