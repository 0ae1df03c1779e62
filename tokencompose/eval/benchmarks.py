"""The evaluation benchmarks: native release files -> shards, prompts as LLaVA-1.5 asks, scoring, server exports.

Each converter reads the benchmark's own files and writes shards whose samples hold the image bytes and a JSON
record: the conversation (question + the benchmark's prompt suffix; the reference answer) and what scoring
needs (``references``, ``meta``). ``score`` turns predictions into metrics; ``export`` writes the answer file
an official server takes (VQAv2 test-dev, VizWiz, MM-Vet).
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokencompose.data.shards import write_shard
from tokencompose.eval.metrics import (
    CircularAccuracy,
    ExactMatch,
    MMEScore,
    OptionAccuracy,
    POPEMetrics,
    VQAAccuracy,
)

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
SAMPLES_PER_SHARD = 1000


@dataclass
class Item:
    """One question. image: bytes and its extension; references: what scoring compares with."""

    key: str
    image: bytes | None
    extension: str
    question: str
    answer: str
    references: Any = None
    meta: dict[str, Any] | None = None


def write_items(items: Iterable[Item], out: Path, benchmark: str) -> int:
    """Items -> ``out/<benchmark>-NNNNNN.tar`` shards. Returns the number of samples."""
    out.mkdir(parents=True, exist_ok=True)
    total, batch, index = 0, [], 0

    def flush(chunk: list[dict[str, Any]], n: int) -> int:
        return write_shard(out / f"{benchmark}-{n:06d}.tar", chunk) if chunk else 0

    for item in items:
        record = {
            "id": item.key, "benchmark": benchmark, "references": item.references, "meta": item.meta or {},
            "conversations": [{"from": "human", "value": ("<image>\n" if item.image is not None else "") + item.question},
                              {"from": "gpt", "value": item.answer}],
        }
        sample = {"__key__": item.key.replace(".", "_").replace("/", "_"), "json": json.dumps(record).encode()}
        if item.image is not None:
            sample[item.extension] = item.image
        batch.append(sample)
        if len(batch) == SAMPLES_PER_SHARD:
            total += flush(batch, index)
            batch, index = [], index + 1
    return total + flush(batch, index)


def _image(path: Path) -> tuple[bytes, str]:
    return path.read_bytes(), path.suffix.lstrip(".").lower().replace("jpeg", "jpg")


# ---------------------------------------------------------------------------------------------- converters
def vqav2_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """v2_OpenEnded_mscoco_<split>_questions.json (+ v2_mscoco_<split>_annotations.json when available)."""
    questions = json.loads(source.read_text())
    subtype = questions.get("data_subtype", "val2014")
    answers = {}
    if annotations is not None:
        answers = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in json.loads(annotations.read_text())["annotations"]}
    for q in questions["questions"]:
        image, ext = _image(images / f"COCO_{subtype}_{q['image_id']:012d}.jpg")
        refs = answers.get(q["question_id"], [])
        yield Item(str(q["question_id"]), image, ext, f"{q['question']}\n{SHORT}", refs[0] if refs else "", refs,
                   {"question_id": q["question_id"]})


def textvqa_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """TextVQA_0.5.1_<split>.json."""
    for q in json.loads(source.read_text())["data"]:
        image, ext = _image(images / f"{q['image_id']}.jpg")
        refs = q.get("answers", [])
        yield Item(str(q["question_id"]), image, ext, f"{q['question']}\n{SHORT}", refs[0] if refs else "", refs,
                   {"question_id": q["question_id"]})


def vizwiz_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """VizWiz VQA val.json / test.json (a list; answers absent on test)."""
    for q in json.loads(source.read_text()):
        image, ext = _image(images / q["image"])
        refs = [a["answer"] for a in q.get("answers", [])]
        yield Item(q["image"], image, ext, f"{q['question']}\n{UNANSWERABLE}\n{SHORT}", refs[0] if refs else "", refs,
                   {"image": q["image"]})


def gqa_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """testdev_balanced_questions.json: {question id: {imageId, question, answer}}."""
    for qid, q in json.loads(source.read_text()).items():
        image, ext = _image(images / f"{q['imageId']}.jpg")
        yield Item(qid, image, ext, f"{q['question']}\n{SHORT}", q.get("answer", ""), q.get("answer", ""), {"question_id": qid})


def pope_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """coco_pope_{random,popular,adversarial}.json: one JSON object per line."""
    category = source.stem.rsplit("_", 1)[-1]
    for line in source.read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            image, ext = _image(images / q["image"])
            yield Item(f"{category}-{q['question_id']}", image, ext, f"{q['text']}\n{SHORT}", q["label"], q["label"],
                       {"category": category})


def mme_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item]:
    """The MME release folder: <subtask>/{images, questions_answers_YN}/ or <subtask>/<image> + <image>.txt;
    each .txt holds 'question<TAB>answer' lines."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        answers_dir = folder / "questions_answers_YN"
        pairs = []
        for txt in sorted((answers_dir if answers_dir.is_dir() else folder).glob("*.txt")):
            image_dir = folder / "images" if answers_dir.is_dir() else folder
            image = next((p for p in image_dir.glob(txt.stem + ".*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")), None)
            if image is not None:
                pairs.append((txt, image))
        for txt, image_path in pairs:
            image, ext = _image(image_path)
            for n, line in enumerate(text for text in txt.read_text().splitlines() if text.strip()):
                question, answer = line.rsplit("\t", 1)
                yield Item(f"{folder.name}-{image_path.stem}-{n}", image, ext, f"{question}\n{SHORT}", answer.strip(),
                           answer.strip(), {"subtask": folder.name, "image": f"{folder.name}/{image_path.name}"})


def scienceqa_items(source: Path, images: Path, annotations: Path | None = None, split: str = "test") -> Iterator[Item]:
    """ScienceQA problems.json (+ pid_splits.json beside it): the IMG subset of ``split``."""
    problems = json.loads(source.read_text())
    splits = json.loads((source.parent / "pid_splits.json").read_text())
    for pid in splits[split]:
        p = problems[pid]
        if not p.get("image"):
            continue
        image, ext = _image(images / split / pid / p["image"])
        options = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(p["choices"]))
        context = f"Context: {p['hint']}\n" if p.get("hint") else ""
        letter = chr(65 + p["answer"])
        yield Item(pid, image, ext, f"{context}{p['question']}\n{options}\n{LETTER}", letter, letter,
                   {"num_options": len(p["choices"])})


def mmbench_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item]:
    """MMBench TSV (base64 images). Each question is asked once per rotation of its options (circular)."""
    with source.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            options = [row[c] for c in "ABCD" if row.get(c) not in (None, "", "nan")]
            answer = row.get("answer", "")
            image = base64.b64decode(row["image"])
            hint = f"{row['hint']}\n" if row.get("hint") not in (None, "", "nan") else ""
            for k in range(len(options)):
                rotated = options[k:] + options[:k]
                letters = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(rotated))
                target = chr(65 + rotated.index(options[ord(answer) - 65])) if answer else ""
                yield Item(f"{row['index']}-{k}", image, "jpg", f"{hint}{row['question']}\n{letters}\n{LETTER}", target,
                           target, {"num_options": len(options), "question": int(row["index"]), "category": row.get("category")})


def mmvet_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item]:
    """mm-vet.json: {id: {imagename, question, answer, capability}} (scored by a GPT judge: export only)."""
    for qid, q in json.loads(source.read_text()).items():
        image, ext = _image(images / q["imagename"])
        yield Item(qid, image, ext, q["question"], q.get("answer", ""), q.get("answer", ""), {"capability": q.get("capability")})


def shapes_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item]:
    """Not a release format: the built-in synthetic shapes, scored by exact match per question type."""
    raise NotImplementedError("the synthetic shapes shards are already in shard form")


# ---------------------------------------------------------------------------------------------- scoring
def _vqa(metric, preds, records):
    metric.update(preds, [r["references"] for r in records])


def _exact(metric, preds, records):
    metric.update(preds, [r.get("references") if isinstance(r.get("references"), str) else r["conversations"][-1]["value"]
                          for r in records])


def _pope(metric, preds, records):
    metric.update(preds, [r["references"] for r in records])


def _mme(metric, preds, records):
    metric.update(preds, [r["references"] for r in records], [r["meta"]["subtask"] for r in records], [r["meta"]["image"] for r in records])


def _options(metric, preds, records):
    metric.update(preds, [r["references"] for r in records], [r["meta"]["num_options"] for r in records])


def _circular(metric, preds, records):
    metric.update(preds, [r["references"] for r in records], [r["meta"]["num_options"] for r in records],
                  [r["meta"]["question"] for r in records])


def _export_vqav2(out: Path, preds: list[str], records: list[dict]) -> Path:
    path = out / "vqav2_answers.json"  # EvalAI VQAv2 test-dev / test-std upload
    path.write_text(json.dumps([{"question_id": r["meta"]["question_id"], "answer": p} for p, r in zip(preds, records, strict=True)]))
    return path


def _export_vizwiz(out: Path, preds: list[str], records: list[dict]) -> Path:
    path = out / "vizwiz_answers.json"  # EvalAI VizWiz upload
    path.write_text(json.dumps([{"image": r["meta"]["image"], "answer": p} for p, r in zip(preds, records, strict=True)]))
    return path


def _export_mmvet(out: Path, preds: list[str], records: list[dict]) -> Path:
    path = out / "mmvet_answers.json"  # the MM-Vet GPT-4 grader's input: {id: answer}
    path.write_text(json.dumps({r["id"]: p for p, r in zip(preds, records, strict=True)}))
    return path


@dataclass(frozen=True)
class Benchmark:
    name: str
    items: Callable[..., Iterator[Item]]
    metric: Callable[[], Any] | None
    update: Callable[[Any, list[str], list[dict]], None] | None
    export: Callable[[Path, list[str], list[dict]], Path] | None = None
    max_new_tokens: int = 16


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("vqav2", vqav2_items, VQAAccuracy, _vqa, _export_vqav2),
        Benchmark("textvqa", textvqa_items, VQAAccuracy, _vqa),
        Benchmark("vizwiz", vizwiz_items, VQAAccuracy, _vqa, _export_vizwiz),
        Benchmark("gqa", gqa_items, ExactMatch, _exact),
        Benchmark("pope", pope_items, POPEMetrics, _pope),
        Benchmark("mme", mme_items, MMEScore, _mme),
        Benchmark("scienceqa", scienceqa_items, OptionAccuracy, _options),
        Benchmark("mmbench", mmbench_items, CircularAccuracy, _circular),
        Benchmark("mmvet", mmvet_items, None, None, _export_mmvet, max_new_tokens=256),
        Benchmark("shapes", shapes_items, ExactMatch, _exact, max_new_tokens=4),
    )
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def convert_benchmark(name: str, source: str, out: str, images: str | None = None, annotations: str | None = None) -> int:
    """Native files of benchmark ``name`` -> shards in ``out``. Returns the number of samples."""
    benchmark = get_benchmark(name)
    items = benchmark.items(Path(source), Path(images) if images else None, Path(annotations) if annotations else None)
    return write_items(items, Path(out), name)
