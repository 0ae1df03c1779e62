"""``evaluate`` and the converters on bad data: nothing predicted is lost, every problem is counted and named."""

import base64
import csv
import io
import json
import logging
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import build_mask_llava
from tokencompose.data.shards import write_shard
from tokencompose.data.synthetic import shapes_text_tokenizer
from tokencompose.eval.benchmarks import Item, convert_benchmark, write_items
from tokencompose.eval.records import Tally
from tokencompose.eval.runner import evaluate, load_records
from tokencompose.tokenizers import GlobalTokenizer, PatchPoolTokenizer

QUESTION = "Is there a dog?\nAnswer the question using a single word or phrase."


def jpeg(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((24, 32, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    """A tiny random Mask-LLaVA without the object stream (benchmark shards carry no masks)."""
    return build_mask_llava(shapes_text_tokenizer(), tokenizers={"cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=2)})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def raw_sample(key: str, record: dict, seed: int = 0) -> dict:
    return {"__key__": key, "json": json.dumps(record).encode(), "jpg": jpeg(seed)}


def pope_record(key: str, label) -> dict:
    return {"id": key, "benchmark": "pope", "references": label, "meta": {"category": "random"},
            "conversations": [{"from": "human", "value": "<image>\n" + QUESTION}, {"from": "gpt", "value": str(label)}]}


def test_no_reference_benchmark_is_exported_and_not_scored(model, tmp_path):
    """VQAv2 test-dev has no answers: nothing is scored (no division by zero) and the server file is written."""
    items = [Item(str(i), jpeg(i), "jpg", QUESTION, "", [], {"question_id": 100 + i}) for i in range(3)]
    write_items(items, tmp_path / "shards", "vqav2")
    result = evaluate(model, "vqav2", str(tmp_path / "shards" / "vqav2-000000.tar"), tmp_path / "out", cost_samples=0)
    assert result.scores == {} and result.report["scored"] == 0
    assert result.report["issues"]["no reference answers"]["count"] == 3
    exported = json.loads(result.export_file.read_text())
    assert sorted(row["question_id"] for row in exported) == [100, 101, 102]
    assert len(lines(result.predictions_file)) == 3


def test_predictions_are_written_before_scoring_can_fail(model, tmp_path):
    """An MME image with three questions is a clear scoring error, after the predictions are on disk."""
    items = [Item(f"color-1-{n}", jpeg(), "jpg", QUESTION, "Yes", "Yes", {"subtask": "color", "image": "color/1.jpg"})
             for n in range(3)]
    write_items(items, tmp_path / "shards", "mme")
    with pytest.raises(ValueError, match=r"MME color: each image needs exactly two questions.*color/1.jpg"):
        evaluate(model, "mme", str(tmp_path / "shards" / "mme-000000.tar"), tmp_path / "out", cost_samples=0)
    assert sorted(r["id"] for r in lines(tmp_path / "out" / "mme_predictions.jsonl")) == ["color-1-0", "color-1-1", "color-1-2"]


def test_predictions_made_before_a_crash_are_on_disk(model, tmp_path, monkeypatch):
    write_items([Item(f"q{i}", jpeg(i), "jpg", QUESTION, "yes", "yes", {}) for i in range(3)], tmp_path / "shards", "pope")
    predict_step = model.predict_step

    def failing(batch, batch_idx):
        if batch_idx == 1:
            raise RuntimeError("out of memory (simulated)")
        return predict_step(batch, batch_idx)

    monkeypatch.setattr(model, "predict_step", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        evaluate(model, "pope", str(tmp_path / "shards" / "pope-000000.tar"), tmp_path / "out", batch_size=1, cost_samples=0)
    assert [r["id"] for r in lines(tmp_path / "out" / "pope_predictions.jsonl")] == ["q0"]


def test_damaged_and_repeated_shards_missing_fields_and_nan_labels_are_counted(model, tmp_path, caplog):
    shards = tmp_path / "shards"
    good = shards / "pope-000000.tar"
    write_shard(good, [raw_sample("a0", pope_record("a0", "yes")), raw_sample("a1", pope_record("a1", "no"), 1)])
    odd = shards / "pope-000001.tar"
    no_references = pope_record("b1", "yes")
    del no_references["references"]
    write_shard(odd, [raw_sample("b0", pope_record("b0", math.nan)), raw_sample("b1", no_references),
                      {"__key__": "b2", "json": b"{not json", "jpg": jpeg()}])
    damaged = shards / "pope-000002.tar"
    write_shard(damaged, [raw_sample(f"c{i}", pope_record(f"c{i}", "yes"), i) for i in range(4)])
    with tarfile.open(damaged) as tar:  # cut exactly before a member's header: tarfile itself sees a short shard
        cut = tar.getmembers()[4].offset
    damaged.write_bytes(damaged.read_bytes()[:cut])
    readable = load_records([str(damaged)])  # what survives of the damaged shard (the records before the fault;
    assert sorted(readable) == ["c0"]  # the sample read when the tar ends may be incomplete, so it is dropped)

    caplog.set_level(logging.WARNING)
    urls = [str(good), str(odd), str(damaged), str(shards / "." / good.name)]  # the first shard again, respelled
    result = evaluate(model, "pope", urls, tmp_path / "out", batch_size=2, cost_samples=0)
    issues = result.report["issues"]
    assert issues["shard given twice (read once)"] == {"count": 1, "examples": [urls[3]]}
    assert issues["unreadable shard (records after the fault are missing)"]["count"] == 1
    (example,) = issues["unreadable shard (records after the fault are missing)"]["examples"]
    assert example.startswith(f"{damaged}: ShardError") and "cut at a member boundary" in example
    assert issues["corrupt json record"] == {"count": 1, "examples": [f"{odd}:b2"]}
    assert issues["missing field 'references'"] == {"count": 1, "examples": ["b1"]}
    assert issues["label is not a string (e.g. NaN): scored positive, as eval_pope.py"]["examples"] == ["b0"]
    predicted = sorted(r["key"] for r in result.records)
    assert predicted == sorted(["a0", "a1", "b0", "b1", *readable])  # each sample once; b2 has no record
    assert sorted(r["key"] for r in lines(result.predictions_file)) == predicted
    assert result.report["scored"] == len(predicted) - 1  # all but the record without references
    assert "missing field 'references'" in caplog.text and "b1" in caplog.text


def test_mme_line_without_tab_skips_the_image_and_names_the_line(tmp_path, caplog):
    root = tmp_path / "MME" / "color"
    root.mkdir(parents=True)
    for name in ("1", "2"):
        (root / f"{name}.png").write_bytes(jpeg())
    (root / "1.txt").write_text("Is it red? Please answer yes or no.\tYes\nIs it blue? Please answer yes or no.\tNo\n")
    (root / "2.txt").write_text("Is it red? Please answer yes or no. Yes\nIs it blue? Please answer yes or no.\tNo\n")
    caplog.set_level(logging.WARNING)
    assert convert_benchmark("mme", str(tmp_path / "MME"), str(tmp_path / "out")) == 2
    assert f"{root / '2.txt'}:1 (line without a TAB)" in caplog.text
    assert "MME image with 1 questions (needs 2)" in caplog.text


def test_converters_skip_and_name_bad_entries(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    (images / "COCO_val2014_1.jpg").write_bytes(jpeg())
    entries = [{"question_id": 1, "image": "COCO_val2014_1.jpg", "text": "Is there a dog?", "label": "yes"},
               {"question_id": 2, "image": "COCO_val2014_1.jpg", "text": "Is there a cat?"},  # no label
               {"question_id": 3, "image": "COCO_val2014_9.jpg", "text": "Is there a cow?", "label": "no"}]
    (tmp_path / "coco_pope_random.json").write_text("\n".join(json.dumps(e) for e in entries))
    with (tmp_path / "mmbench.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "question", "hint", "A", "B", "C", "D", "answer", "image"], delimiter="\t")
        writer.writeheader()
        image = base64.b64encode(jpeg()).decode()
        writer.writerow({"index": 1, "question": "Which?", "hint": "nan", "A": "cat", "B": "dog", "C": "nan", "D": "nan",
                         "answer": "nan", "image": image})  # NaN answer: a test row, asked without a reference
        writer.writerow({"index": 2, "question": "Which?", "hint": "", "A": "cat", "B": "dog", "C": "", "D": "",
                         "answer": "C", "image": image})  # names no option
    caplog.set_level(logging.WARNING)
    assert convert_benchmark("pope", str(tmp_path / "coco_pope_random.json"), str(tmp_path / "pope"), str(images)) == 1
    assert "coco_pope_random.json line 2 (missing field 'label')" in caplog.text
    assert "coco_pope_random.json line 3: " in caplog.text and "(missing image)" in caplog.text
    assert convert_benchmark("mmbench", str(tmp_path / "mmbench.tsv"), str(tmp_path / "mmbench")) == 2
    assert "mmbench.tsv row 3 (index 2)" in caplog.text and "names none of the 2 options" in caplog.text
    records = sorted(load_records([str(p) for p in (tmp_path / "mmbench").glob("*.tar")]).values(), key=lambda r: r["id"])
    assert [r["references"] for r in records] == ["", ""]  # the NaN answer became "no reference"


def test_a_shard_cut_inside_a_member_keeps_the_records_before_the_fault(tmp_path):
    shard = tmp_path / "pope-000000.tar"
    write_shard(shard, [raw_sample(f"c{i}", pope_record(f"c{i}", "yes"), i) for i in range(4)])
    with tarfile.open(shard) as tar:
        member = tar.getmembers()[5]  # c2's image
    shard.write_bytes(shard.read_bytes()[: member.offset_data + member.size // 2])
    tally = Tally()
    assert sorted(load_records([str(shard)], tally)) == ["c0", "c1"]
    (place,) = tally.places["unreadable shard (records after the fault are missing)"]
    assert place.startswith(f"{shard}: ShardError") and "truncated shard after 2 samples" in place


def test_generated_answers_are_stripped_once_at_generation(model, make_batch, monkeypatch):
    """As LLaVA's model_vqa*.py (``batch_decode(...)[0].strip()``); the scorers never strip again (MME)."""
    batch = make_batch(model, 2)
    monkeypatch.setattr(model.llm.text_tokenizer, "batch_decode", lambda ids, **_: ["  Yes\n", " no, it is not "])
    assert model.generate(batch, max_new_tokens=2) == ["Yes", "no, it is not"]
