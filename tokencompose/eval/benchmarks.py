"""The evaluation benchmarks: native release files -> shards, prompts as LLaVA-1.5 asks, scoring, server exports.

Each converter reads the benchmark's own files and writes shards whose samples hold the image bytes and a JSON
record: the conversation (question + the benchmark's prompt suffix; the reference answer) and what scoring
needs (``references``, ``meta``). A bad source entry (a missing field or image, an MME line without a TAB, an
MMBench answer that names no option) is skipped, logged by name and counted; it never stops a conversion.

Each benchmark names its ``scorer`` (``scorers.py``: which official code its numbers reproduce) and, where an
official server scores it, an ``export`` writing the answer file that server takes (VQAv2 test-dev, VizWiz,
MM-Vet).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokencompose.data.shards import write_shard
from tokencompose.eval import scorers
from tokencompose.eval.normalize import evalai_answer
from tokencompose.eval.scorers import Scorer

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Skipped:
    """A source entry a converter could not use: why, and where (file, line or id)."""

    reason: str
    where: str


def guarded(entries: Iterable[tuple[str, Any]], make: Callable[[Any], Iterable[Item]]) -> Iterator[Item | Skipped]:
    """``make`` on each (where, raw entry); an entry with a missing field or image, or a bad value, becomes a
    ``Skipped`` naming it. All items of an entry are made before any is yielded, so none is half-written."""
    for where, entry in entries:
        try:
            made = list(make(entry))
        except KeyError as error:
            yield Skipped(f"missing field {error}", where)
        except FileNotFoundError as error:
            yield Skipped("missing image", f"{where}: {error.filename}")
        except (ValueError, TypeError, AttributeError) as error:
            yield Skipped(f"bad value ({type(error).__name__}: {error})", where)
        else:
            yield from made


def write_items(items: Iterable[Item | Skipped], out: Path, benchmark: str) -> int:
    """Items -> ``out/<benchmark>-NNNNNN.tar`` shards; each ``Skipped`` is logged with its place, and the totals
    by reason at the end. Returns the number of samples written."""
    out.mkdir(parents=True, exist_ok=True)
    total, batch, index = 0, [], 0
    skipped: Counter[str] = Counter()

    def flush(chunk: list[dict[str, Any]], n: int) -> int:
        return write_shard(out / f"{benchmark}-{n:06d}.tar", chunk) if chunk else 0

    for item in items:
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
            log.warning("%s: skipped %s (%s)", benchmark, item.where, item.reason)
            continue
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
    total += flush(batch, index)
    if skipped:
        log.warning("%s: %d samples written, %d source entries skipped: %s", benchmark, total, sum(skipped.values()),
                    dict(skipped))
    return total


def _image(path: Path) -> tuple[bytes, str]:
    return path.read_bytes(), path.suffix.lstrip(".").lower().replace("jpeg", "jpg")


# ---------------------------------------------------------------------------------------------- converters
def vqav2_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """v2_OpenEnded_mscoco_<split>_questions.json (+ v2_mscoco_<split>_annotations.json when available)."""
    questions = json.loads(source.read_text())
    subtype = questions.get("data_subtype", "val2014")
    answers = {}
    if annotations is not None:
        answers = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in json.loads(annotations.read_text())["annotations"]}

    def make(q: dict[str, Any]) -> Iterator[Item]:
        image, ext = _image(images / f"COCO_{subtype}_{q['image_id']:012d}.jpg")
        refs = answers.get(q["question_id"], [])
        yield Item(str(q["question_id"]), image, ext, f"{q['question']}\n{SHORT}", refs[0] if refs else "", refs,
                   {"question_id": q["question_id"]})

    return guarded(((f"{source.name} question {i}", q) for i, q in enumerate(questions["questions"])), make)


def textvqa_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """TextVQA_0.5.1_<split>.json."""
    def make(q: dict[str, Any]) -> Iterator[Item]:
        image, ext = _image(images / f"{q['image_id']}.jpg")
        refs = q.get("answers", [])
        yield Item(str(q["question_id"]), image, ext, f"{q['question']}\n{SHORT}", refs[0] if refs else "", refs,
                   {"question_id": q["question_id"]})

    return guarded(((f"{source.name} entry {i}", q) for i, q in enumerate(json.loads(source.read_text())["data"])), make)


def vizwiz_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """VizWiz VQA val.json / test.json (a list; answers absent on test)."""
    def make(q: dict[str, Any]) -> Iterator[Item]:
        image, ext = _image(images / q["image"])
        refs = [a["answer"] for a in q.get("answers", [])]
        yield Item(q["image"], image, ext, f"{q['question']}\n{UNANSWERABLE}\n{SHORT}", refs[0] if refs else "", refs,
                   {"image": q["image"]})

    return guarded(((f"{source.name} entry {i}", q) for i, q in enumerate(json.loads(source.read_text()))), make)


def gqa_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """testdev_balanced_questions.json: {question id: {imageId, question, answer}}."""
    def make(entry: tuple[str, dict[str, Any]]) -> Iterator[Item]:
        qid, q = entry
        image, ext = _image(images / f"{q['imageId']}.jpg")
        yield Item(qid, image, ext, f"{q['question']}\n{SHORT}", q.get("answer", ""), q.get("answer", ""), {"question_id": qid})

    return guarded(((f"{source.name} question {qid}", (qid, q)) for qid, q in json.loads(source.read_text()).items()), make)


def pope_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """coco_pope_{random,popular,adversarial}.json: one JSON object per line. The label is kept as given:
    scoring treats anything but exactly 'no' as positive, as eval_pope.py does, and reports odd labels."""
    category = source.stem.rsplit("_", 1)[-1]

    def make(line: str) -> Iterator[Item]:
        q = json.loads(line)
        image, ext = _image(images / q["image"])
        yield Item(f"{category}-{q['question_id']}", image, ext, f"{q['text']}\n{SHORT}", str(q["label"]), q["label"],
                   {"category": category})

    lines = source.read_text().splitlines()
    return guarded(((f"{source.name} line {n}", line) for n, line in enumerate(lines, 1) if line.strip()), make)


def mme_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """The MME release folder: <subtask>/{images, questions_answers_YN}/ or <subtask>/<image> + <image>.txt;
    each .txt holds 'question<TAB>answer' lines, two per image. A line without a TAB is skipped; an image left
    with other than two questions is skipped whole (MME's accuracy+ scores the pair)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        answers_dir = folder / "questions_answers_YN"
        pairs = []
        for txt in sorted((answers_dir if answers_dir.is_dir() else folder).glob("*.txt")):
            image_dir = folder / "images" if answers_dir.is_dir() else folder
            image = next((p for p in image_dir.glob(txt.stem + ".*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")), None)
            if image is not None:
                pairs.append((txt, image))
        for txt, image_path in pairs:
            questions = []
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                if "\t" not in line:
                    yield Skipped("line without a TAB", f"{txt}:{n}")
                    continue
                question, answer = line.rsplit("\t", 1)
                questions.append((question, answer.strip()))
            if len(questions) != 2:
                yield Skipped(f"MME image with {len(questions)} questions (needs 2)", str(image_path))
                continue
            image, ext = _image(image_path)
            for n, (question, answer) in enumerate(questions):
                yield Item(f"{folder.name}-{image_path.stem}-{n}", image, ext, f"{question}\n{SHORT}", answer, answer,
                           {"subtask": folder.name, "image": f"{folder.name}/{image_path.name}"})


def scienceqa_items(source: Path, images: Path, annotations: Path | None = None, split: str = "test") -> Iterator[Item | Skipped]:
    """ScienceQA problems.json (+ pid_splits.json beside it): the IMG subset of ``split``."""
    problems = json.loads(source.read_text())
    splits = json.loads((source.parent / "pid_splits.json").read_text())

    def make(pid: str) -> Iterator[Item]:
        p = problems[pid]
        if not p.get("image"):
            return
        image, ext = _image(images / split / pid / p["image"])
        options = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(p["choices"]))
        context = f"Context: {p['hint']}\n" if p.get("hint") else ""
        letter = chr(65 + p["answer"])
        yield Item(pid, image, ext, f"{context}{p['question']}\n{options}\n{LETTER}", letter, letter,
                   {"num_options": len(p["choices"])})

    return guarded(((f"{source.name} problem {pid}", pid) for pid in splits[split]), make)


def _missing_cell(value: str | None) -> bool:
    return value is None or value.strip() in ("", "nan", "NaN", "None")


def mmbench_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """MMBench TSV (base64 images). Each question is asked once per rotation of its options (circular). An
    empty or NaN answer is a test row (no reference); one naming no option is skipped."""
    def make(row: dict[str, str]) -> Iterator[Item]:
        options = [row[c] for c in "ABCD" if not _missing_cell(row.get(c))]
        answer = "" if _missing_cell(row.get("answer")) else row["answer"].strip()
        if answer and answer not in tuple("ABCD"[: len(options)]):
            raise ValueError(f"answer {answer!r} names none of the {len(options)} options")
        image = base64.b64decode(row["image"])
        hint = f"{row['hint']}\n" if not _missing_cell(row.get("hint")) else ""
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            letters = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(rotated))
            target = chr(65 + rotated.index(options[ord(answer) - 65])) if answer else ""
            yield Item(f"{row['index']}-{k}", image, "jpg", f"{hint}{row['question']}\n{letters}\n{LETTER}", target,
                       target, {"num_options": len(options), "question": int(row["index"]), "category": row.get("category")})

    with source.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return guarded(((f"{source.name} row {n} (index {r.get('index')})", r) for n, r in enumerate(rows, 2)), make)


def mmvet_items(source: Path, images: Path, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """mm-vet.json: {id: {imagename, question, answer, capability}} (scored by a GPT judge: export only)."""
    def make(entry: tuple[str, dict[str, Any]]) -> Iterator[Item]:
        qid, q = entry
        image, ext = _image(images / q["imagename"])
        yield Item(qid, image, ext, q["question"], q.get("answer", ""), q.get("answer", ""), {"capability": q.get("capability")})

    return guarded(((f"{source.name} {qid}", (qid, q)) for qid, q in json.loads(source.read_text()).items()), make)


def shapes_items(source: Path, images: Path | None = None, annotations: Path | None = None) -> Iterator[Item | Skipped]:
    """Not a release format: the built-in synthetic shapes, scored by exact match per question type."""
    raise NotImplementedError("the synthetic shapes shards are already in shard form")


# ---------------------------------------------------------------------------------------------- exports
Exporter = Callable[[Path, list[str], list[dict[str, Any]]], Path]


def _export_vqav2(out: Path, preds: list[str], records: list[dict[str, Any]]) -> Path:
    """EvalAI VQAv2 test-dev / test-std upload, answers processed as LLaVA's convert_vqav2_for_submission.py."""
    path = out / "vqav2_answers.json"
    rows = [{"question_id": r["meta"]["question_id"], "answer": evalai_answer(p)} for p, r in zip(preds, records, strict=True)]
    path.write_text(json.dumps(rows))
    return path


def _export_vizwiz(out: Path, preds: list[str], records: list[dict[str, Any]]) -> Path:
    """EvalAI VizWiz upload, answers processed as LLaVA's convert_vizwiz_for_submission.py."""
    path = out / "vizwiz_answers.json"
    rows = [{"image": r["meta"]["image"], "answer": evalai_answer(p)} for p, r in zip(preds, records, strict=True)]
    path.write_text(json.dumps(rows))
    return path


def _export_mmvet(out: Path, preds: list[str], records: list[dict[str, Any]]) -> Path:
    path = out / "mmvet_answers.json"  # the MM-Vet GPT-4 grader's input: {id: answer}
    path.write_text(json.dumps({r["id"]: p for p, r in zip(preds, records, strict=True)}))
    return path


@dataclass(frozen=True)
class Benchmark:
    """name: as given to ``convert-benchmark`` and ``eval``; scorer: the official scorer its numbers follow
    (None: export only); export: the answer file for an official server; export_needs: the record field each
    exported row needs (records without it are left out of the file and counted)."""

    name: str
    items: Callable[..., Iterator[Item | Skipped]]
    scorer: Scorer | None
    export: Exporter | None = None
    export_needs: tuple[str, ...] = ()
    max_new_tokens: int = 16


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("vqav2", vqav2_items, scorers.VQAV2, _export_vqav2, ("meta", "question_id")),
        # The pre-2021 vqaEval.py, kept because some published VQAv2 numbers use it: same shards as "vqav2".
        Benchmark("vqav2_2016", vqav2_items, scorers.VQAV2_2016, _export_vqav2, ("meta", "question_id")),
        Benchmark("textvqa", textvqa_items, scorers.TEXTVQA),
        Benchmark("vizwiz", vizwiz_items, scorers.VIZWIZ, _export_vizwiz, ("meta", "image")),
        Benchmark("gqa", gqa_items, scorers.GQA),
        Benchmark("pope", pope_items, scorers.POPE),
        Benchmark("mme", mme_items, scorers.MME),
        Benchmark("scienceqa", scienceqa_items, scorers.SCIENCEQA),
        Benchmark("mmbench", mmbench_items, scorers.MMBENCH),
        Benchmark("mmvet", mmvet_items, None, _export_mmvet, ("id",), max_new_tokens=256),
        Benchmark("shapes", shapes_items, scorers.SHAPES, max_new_tokens=4),
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
