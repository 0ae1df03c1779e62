"""ConversationEncoder against LLaVA's own tokenisation, on a Llama-style SentencePiece tokenizer trained here.

Reference, re-derived from haotian-liu/LLaVA (read at commit 0034661 for ``llava/train/train.py``, ff09d19 for
``llava/mm_utils.py``, 053c284 for ``llava/conversation.py``; the ``legacy`` adjustment of ``preprocess_v1`` as on
main, c121f04):
- ``conv_vicuna_v1.get_prompt`` (SeparatorStyle.TWO): ``system + " "``, then ``role + ": " + message`` followed by
  ``" "`` after a human turn and ``"</s>"`` after an answer.
- ``preprocess_multimodal``: a turn with ``<image>`` becomes ``"<image>\\n" + rest.strip()``, stripped.
- ``tokenizer_image_token``: split at ``<image>``, ``tokenizer(chunk)`` for each chunk, BOS kept once, one
  ``IMAGE_TOKEN_INDEX`` between chunks.
- ``preprocess_v1``: labels start as the ids; ``[:1]`` ignored; the prompt split at ``"</s>"`` into rounds, each
  split at ``" ASSISTANT: "``; ``round_len = len(tii(round))``, ``instruction_len = len(tii(parts[0])) - 2``, both
  one less after the first round when ``not tokenizer.legacy`` (tokenizers >= 0.14); the instruction is ignored,
  everything after the last round too; a length mismatch ignores the whole sample. Without an image
  ``tokenizer(prompt, max_length=model_max_length, truncation=True)`` replaces ``tii``.
- ``preprocess_plain``: ``"<image>" + answer + "\\n"``, the ``tii("<image>")`` head ignored.
- ``prepare_inputs_labels_for_multimodal`` (``llava/model/llava_arch.py``, 015f6b7): each image expands to its visual tokens (labels
  ignored), then the sequence is cut to ``tokenizer_model_max_length``.

The tokenizer LLaVA used is transformers 4.x's slow ``LlamaTokenizer`` (huggingface/transformers
``src/transformers/models/llama/tokenization_llama.py``, read at 01b6c9c; ``PreTrainedTokenizer.tokenize`` splits
at special tokens first); ``SlowLlamaReference`` re-implements it on ``sentencepiece`` alone.
"""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from tokencompose.llm import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    ChatTemplate,
    ConversationEncoder,
    PlainTemplate,
    Segment,
    SequenceTooLong,
    VicunaV1Template,
)
from tokencompose.llm.templates import images_first
from tokencompose.llm.text_tokenizer import load_sentencepiece_llama_tokenizer, load_text_tokenizer

SYSTEM = VicunaV1Template().system
WORDS = "what color is the circle square triangle red green blue how many shapes are there two yes no left of a on".split()
SPECIALS = ("<unk>", "<s>", "</s>")


def corpus() -> list[str]:
    """Vicuna-like text where ``USER`` never follows a space, so ``USER`` is a piece and ``▁USER`` is not,
    as in Llama's vocabulary."""
    rng = random.Random(0)
    lines = [SYSTEM] * 20
    for _ in range(400):
        q, a, n = " ".join(rng.choices(WORDS, k=6)), " ".join(rng.choices(WORDS, k=3)), rng.randint(0, 99)
        lines.append(f"{q} ? ASSISTANT: {n} {a}.USER: {q} ? ASSISTANT: {a}, {n}.")
    return lines


@pytest.fixture(scope="module", params=[False, True], ids=["legacy_false", "legacy_true"])
def llama_dir(request, tmp_path_factory) -> Path:
    """A Llama-style SentencePiece BPE (byte fallback, split digits, no whitespace removal) saved as Vicuna's
    tokenizer folder is: ``tokenizer.model`` + ``tokenizer_config.json`` (``legacy`` as the param says)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, model_type="bpe", vocab_size=600,
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    root = tmp_path_factory.mktemp("llama_sp")
    (root / "tokenizer.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "legacy": request.param, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert sp.id_to_piece(sp.piece_to_id("USER")) == "USER" and sp.piece_to_id("▁USER") == sp.unk_id()
    return root


class SlowLlamaReference:
    """transformers 4.x ``LlamaTokenizer`` (slow): ``__call__(text) -> [BOS] + ids``."""

    def __init__(self, root: Path) -> None:
        config = json.loads((root / "tokenizer_config.json").read_text())
        self.legacy = config["legacy"]
        proto = model_pb2.ModelProto.FromString((root / "tokenizer.model").read_bytes())
        if not self.legacy:  # get_spm_processor: SentencePiece's dummy prefix off, the prefix is added by hand
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.bos_id, self.unk_id = self.sp.bos_id(), self.sp.unk_id()
        self.unk_length = len(self.sp.encode("<unk>", out_type=str))

    def pieces(self, text: str) -> list[str]:
        if not text:
            return []
        if not self.legacy:
            text = "▁" + text.replace("▁", " ")
        out: list[str] = []
        for part in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
            if part in SPECIALS:
                out.append(part)
            elif part and (self.legacy or not part.startswith(("▁", " "))):
                out += self.sp.encode(part, out_type=str)
            elif part:  # a leading space survives only behind a prefix that is then dropped
                out += self.sp.encode("<unk>" + part, out_type=str)[self.unk_length :]
        if not self.legacy and len(out) > 1 and out[0] == "▁" and out[1] in SPECIALS:
            out = out[1:]
        return out

    def __call__(self, text: str) -> list[int]:
        return [self.bos_id] + [self.sp.piece_to_id(p) for p in self.pieces(text)]


def tokenizer_image_token(prompt: str, tokenizer: SlowLlamaReference) -> list[int]:
    chunks = [tokenizer(chunk) for chunk in prompt.split("<image>")]
    ids = [chunks[0][0]]  # every chunk starts with BOS; it is kept once
    for i, chunk in enumerate(chunks):
        ids += ([IMAGE_TOKEN_ID] if i else []) + chunk[1:]
    return ids


def preprocess_multimodal(conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for turn in conversation:
        value = turn["value"]
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        out.append({**turn, "value": value})
    return out


def preprocess_v1(conversation, tokenizer: SlowLlamaReference, model_max_length: int = 2048):
    prompt = SYSTEM + " "
    for j, turn in enumerate(conversation):
        prompt += ("USER" if j % 2 == 0 else "ASSISTANT") + ": " + turn["value"] + (" " if j % 2 == 0 else "</s>")
    has_image = "<image>" in prompt
    length = (lambda t: len(tokenizer_image_token(t, tokenizer))) if has_image else (lambda t: len(tokenizer(t)))
    ids = tokenizer_image_token(prompt, tokenizer) if has_image else tokenizer(prompt)[:model_max_length]
    labels = list(ids)
    total_len = sum(i != tokenizer.unk_id for i in ids)  # LLaVA pads with unk and counts non-pad ids
    sep, cur_len = " ASSISTANT: ", 1
    labels[:1] = [IGNORE_INDEX]
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len, instruction_len = length(rou), length(parts[0] + sep) - 2
        if i != 0 and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        end = min(cur_len + instruction_len, len(labels))
        labels[cur_len:end] = [IGNORE_INDEX] * max(0, end - cur_len)
        cur_len += round_len
    labels[cur_len:] = [IGNORE_INDEX] * max(0, len(labels) - cur_len)
    if cur_len < model_max_length and cur_len != total_len:
        labels = [IGNORE_INDEX] * len(labels)  # LLaVA's "tokenization mismatch": the sample teaches nothing
    return ids, labels


def preprocess_plain(answer: str, tokenizer: SlowLlamaReference):
    ids = tokenizer_image_token("<image>" + answer + "\n", tokenizer)
    head = len(tokenizer_image_token("<image>", tokenizer))
    return ids, [IGNORE_INDEX] * head + ids[head:]


def expand(ids: list[int], labels: list[int], visual_tokens: int, max_length: int) -> tuple[list[int], list[int]]:
    """LLaVA's model side: each image -> ``visual_tokens`` positions (labels ignored), then cut to max_length."""
    out_ids, out_labels = [], []
    for i, label in zip(ids, labels, strict=True):
        n = visual_tokens if i == IMAGE_TOKEN_ID else 1
        out_ids += [i] * n
        out_labels += [IGNORE_INDEX if i == IMAGE_TOKEN_ID else label] * n
    return out_ids[:max_length], out_labels[:max_length]


def split_at(ids: list[int], end: int) -> list[list[int]]:
    """Runs that each end with ``end`` (which is dropped); ids after the last ``end`` fail the caller's check."""
    runs = [[]]
    for i in ids:
        runs[-1].append(i)
        if i == end:
            runs[-1].pop()
            runs.append([])
    assert runs[-1] == []
    return runs[:-1]


def turns(*values: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


SINGLE = turns("<image>\nwhat color is the circle ?", "the circle is red")
MULTI = turns(
    "<image>\nhow many shapes are there ?", "2 shapes",  # an answer that starts with a digit: "▁" is its own token
    "what color is the square ?", "blue",
    "is the triangle left of the circle ?", "yes\nthe triangle is left of the circle",
    "is there a green square ?", "no",
)
TEXT_ONLY = turns("what color is the circle ?", "red", "how many shapes are there ?", "two")
IMAGE_LAST = turns("what color is the square ?\n<image>", "green", "how many shapes are there ?", "two")
IMAGE_MIDDLE = turns("what color is <image> the square ?", "green", "is there a circle ?", "no")
CASES = {"single": SINGLE, "multi_turn": MULTI, "text_only": TEXT_ONLY, "image_last": IMAGE_LAST,
         "image_middle": IMAGE_MIDDLE}
LOADERS = {"fast": load_text_tokenizer, "sentencepiece": load_sentencepiece_llama_tokenizer}


def reference_v1(conversation, llama_dir: Path, image_first: bool = True, model_max_length: int = 2048):
    tokenizer = SlowLlamaReference(llama_dir)
    ids, labels = preprocess_v1(preprocess_multimodal(conversation) if image_first else conversation, tokenizer,
                                model_max_length)
    assert any(label != IGNORE_INDEX for label in labels), "the reference hit LLaVA's tokenization mismatch"
    return ids, labels


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("conversation", CASES.values(), ids=CASES.keys())
def test_vicuna_v1_equals_llava_preprocess_v1(llama_dir, loader, conversation):
    tokenizer = loader(str(llama_dir))
    ours = ConversationEncoder(tokenizer, VicunaV1Template(), max_length=4096, visual_tokens_per_image=5).encode(conversation)
    ids, labels = reference_v1(conversation, llama_dir)
    assert ours.input_ids == ids
    assert ours.labels == labels
    targets = [i for i, label in zip(ours.input_ids, ours.labels, strict=True) if label != IGNORE_INDEX]
    answers = [tokenizer.decode(a) for a in split_at(targets, tokenizer.eos_token_id)]
    assert answers == [t["value"] for t in conversation[1::2]]  # the targets: each answer and its </s>


@pytest.mark.parametrize("conversation", [IMAGE_LAST, IMAGE_MIDDLE, SINGLE], ids=["image_last", "image_middle", "single"])
def test_placeholders_kept_in_place_equal_llava_without_preprocess_multimodal(llama_dir, conversation):
    """``image_first=False``: ``tokenizer_image_token`` on the text as written; the text after a placeholder is a
    fresh tokenizer call, so it gets its own prefix ``▁`` (two where a space follows the placeholder)."""
    tokenizer = load_sentencepiece_llama_tokenizer(str(llama_dir))
    template = VicunaV1Template(image_first=False)
    ours = ConversationEncoder(tokenizer, template, max_length=4096, visual_tokens_per_image=5).encode(conversation)
    assert (ours.input_ids, ours.labels) == reference_v1(conversation, llama_dir, image_first=False)


def test_fast_tokenizer_gives_one_prefix_fewer_after_a_placeholder_and_a_space(llama_dir):
    """The limit of transformers 5's BPE Llama tokenizer (documented on ``SentencePieceLlamaTokenizer``): a chunk
    that begins with a space gets no second ``▁``; everything else is LLaVA's."""
    fast = load_text_tokenizer(str(llama_dir))
    template = VicunaV1Template(image_first=False)
    ours = ConversationEncoder(fast, template, max_length=4096, visual_tokens_per_image=5).encode(IMAGE_MIDDLE)
    ids, labels = reference_v1(IMAGE_MIDDLE, llama_dir, image_first=False)
    after = ids.index(IMAGE_TOKEN_ID) + 1
    assert SlowLlamaReference(llama_dir).sp.id_to_piece(ids[after]) == "▁"
    assert ours.input_ids == ids[:after] + ids[after + 1 :]
    assert ours.labels == labels[:after] + labels[after + 1 :]


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("max_length", [41, 57, 80])
def test_truncation_equals_llava_cut_of_the_expanded_sequence(llama_dir, loader, max_length):
    """MULTI is 96 ids, the image at 34: 101 positions with 6 visual tokens."""
    visual = 6
    encoder = ConversationEncoder(loader(str(llama_dir)), VicunaV1Template(), max_length=max_length,
                                  visual_tokens_per_image=visual)
    ours = encoder.encode(MULTI)
    assert encoder.expanded_length(ours.input_ids) == max_length  # MULTI is longer than each max_length
    ids, labels = reference_v1(MULTI, llama_dir)
    assert expand(ours.input_ids, ours.labels, visual, max_length) == expand(ids, labels, visual, max_length)
    with pytest.raises(SequenceTooLong):  # where LLaVA would cut into the visual tokens, the sample is refused
        ConversationEncoder(encoder.text_tokenizer, encoder.template, max_length=39, visual_tokens_per_image=visual).encode(MULTI)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("max_length", [42, 50])
def test_text_only_truncation_equals_llava_tokenizer_truncation(llama_dir, loader, max_length):
    """TEXT_ONLY is 55 ids, the first answer at 41."""
    encoder = ConversationEncoder(loader(str(llama_dir)), VicunaV1Template(), max_length=max_length, visual_tokens_per_image=5)
    ours = encoder.encode(TEXT_ONLY)
    assert len(ours.input_ids) == max_length
    assert (ours.input_ids, ours.labels) == reference_v1(TEXT_ONLY, llama_dir, model_max_length=max_length)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("answer", ["the circle is red", "2 shapes on the left", "yes\nthere is a square"])
def test_plain_equals_llava_preprocess_plain(llama_dir, loader, answer):
    encoder = ConversationEncoder(loader(str(llama_dir)), PlainTemplate(), max_length=4096, visual_tokens_per_image=5)
    ours = encoder.encode(turns("<image>\nwhat is this ?", answer))
    assert (ours.input_ids, ours.labels) == preprocess_plain(answer, SlowLlamaReference(llama_dir))


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_generation_prompt_is_llava_prompt_up_to_the_last_answer(llama_dir, loader):
    encoder = ConversationEncoder(loader(str(llama_dir)), VicunaV1Template(), max_length=4096, visual_tokens_per_image=5)
    full, prompt = encoder.encode_with_prompt(MULTI)
    assert prompt.input_ids == encoder.encode(MULTI, add_generation_prompt=True).input_ids
    ids, labels = reference_v1(MULTI, llama_dir)
    last_answer = len(ids) - 2  # "▁no" and "</s>"
    assert full.input_ids == ids and labels[last_answer - 1] == IGNORE_INDEX != labels[last_answer]
    assert prompt.input_ids == ids[:last_answer]


def test_sentencepiece_tokenizer_equals_the_slow_reference(llama_dir):
    tokenizer = load_sentencepiece_llama_tokenizer(str(llama_dir))
    reference = SlowLlamaReference(llama_dir)
    texts = ["", " ", "USER: red</s>USER: two", " ASSISTANT: a", "\nwhat 12", "a</s> USER", "</s>USER", "x  y\n\nz ▁w"]
    for text in texts:
        assert tokenizer(text).input_ids == reference(text), text
    assert tokenizer.pad_token == "<unk>"


class SplitWordTemplate(ChatTemplate):
    """A label boundary inside a word: ``"what col" | "or"``."""

    def segments(self, conversation, text_tokenizer, add_generation_prompt=False):
        return [Segment("what col", False), Segment("or", True)]


def test_a_label_boundary_inside_a_token(llama_dir):
    """Without offsets (Python tokenizers) the boundary is refused; with offsets the token goes by its first
    character (``▁color`` starts in the prompt, so nothing is a target)."""
    slow = ConversationEncoder(load_sentencepiece_llama_tokenizer(str(llama_dir)), SplitWordTemplate(), 64, 1)
    with pytest.raises(ValueError, match="SplitWordTemplate.*character 8"):
        slow.encode(SINGLE)
    fast = ConversationEncoder(load_text_tokenizer(str(llama_dir)), SplitWordTemplate(), 64, 1).encode(SINGLE)
    assert fast.labels == [IGNORE_INDEX] * len(fast.input_ids)


def test_images_first_is_preprocess_multimodal():
    for text in ["q\n<image>", "<image>\nq", " a <image> b ", "<image>", "no image"]:
        assert images_first(text) == preprocess_multimodal(turns(text))[0]["value"]
    assert images_first("<image><image>\nq") == "<image><image>\nq"  # frames keep their count
