"""Stored annotations that disagree with their masks, image or model, and samples without a target token:
skipped and counted, never a crash in the collator or a NaN loss."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import build_mask_llava
from tests.data.conftest import attached
from tokencompose.data import Collator, EpochLoader, ShardStream, SyntheticShapes, write_shard
from tokencompose.data.processing import BadSample
from tokencompose.data.shards import EMBEDDINGS_KEY, MASKS_KEY, encode_npy
from tokencompose.data.synthetic import ShapesGenerator
from tokencompose.tokenizers import MaskInversionEmbedding, ObjectTokenizer, PatchPoolTokenizer

DE = 32  # TINY_HF_CLIP projection_dim: the width MaskInversion embeddings are stored at


def encoded(index: int = 0, embeddings: int | None = DE) -> dict:
    """A synthetic sample in shard form (bytes), with MaskInversion-like embeddings of width ``embeddings``."""
    generator = ShapesGenerator(seed=3)
    sample = SyntheticShapes._encode(generator, index)
    count = len(json.loads(sample["json"])["objects"])
    if embeddings is not None:
        sample[EMBEDDINGS_KEY] = encode_npy(np.random.default_rng(index).normal(size=(count, embeddings)).astype(np.float16))
    return sample


def edited(index: int, **changes) -> dict:
    sample = encoded(index)
    record = json.loads(sample["json"])
    count = len(record["objects"])
    if "record" in changes:
        changes.pop("record")(record)
    sample["json"] = json.dumps(record).encode()
    if "embeddings" in changes:
        sample[EMBEDDINGS_KEY] = encode_npy(changes.pop("embeddings")(count))
    if "masks" in changes:
        sample[MASKS_KEY] = changes.pop("masks")(count)
    for key in changes.pop("drop", ()):
        sample.pop(key)
    return sample


BAD = {
    "annotation count mismatch": [
        lambda i: edited(i, record=lambda r: r["objects"].pop()),  # scores for K - 1 of K masks
        lambda i: edited(i, embeddings=lambda k: np.zeros((k + 1, DE), np.float16)),
    ],
    "embedding width mismatch": [lambda i: edited(i, embeddings=lambda k: np.zeros((k, DE + 8), np.float16))],
    "mask size mismatch": [lambda i: edited(i, record=lambda r: r.update(mask_size=[32, 64]))],
    "non-finite annotation": [
        lambda i: edited(i, embeddings=lambda k: np.full((k, DE), np.nan, np.float16)),
        lambda i: edited(i, embeddings=lambda k: np.full((k, DE), np.inf, np.float16)),
        lambda i: edited(i, record=lambda r: r["objects"][0].update(score=float("nan"))),
    ],
    "bad object masks": [lambda i: edited(i, masks=lambda k: encode_npy(np.zeros((k, 64, 64), np.float32)))],
    "missing object masks": [lambda i: edited(i, drop=[MASKS_KEY])],
    "missing object embeddings": [lambda i: edited(i, drop=[EMBEDDINGS_KEY])],
}


@pytest.fixture
def inversion_model(text_tokenizer):
    """A tiny Mask-LLaVA reading stored MaskInversion embeddings (width De = 32)."""
    tokenizers = {"patch": PatchPoolTokenizer(grid=2), "objects": ObjectTokenizer(embedding=MaskInversionEmbedding(), max_objects=4)}
    return build_mask_llava(text_tokenizer, tokenizers=tokenizers, scaler=None, shared_projector=False)


def test_each_annotation_mismatch_is_skipped_and_counted_without_crashing_the_collator(tmp_path, inversion_model):
    data = attached(inversion_model, batch_size=4)
    samples, index = [], 0
    for makers in BAD.values():
        for make in makers:
            index += 1
            samples += [dict(make(index), __key__=f"bad-{index}"), dict(encoded(100 + index), __key__=f"ok-{index}")]
    write_shard(tmp_path / "mixed.tar", samples)
    loader = EpochLoader(ShardStream([str(tmp_path / "mixed.tar")], data.processor, batch_size=4, shuffle=False),
                         collate_fn=data.transform.collator())
    batches = list(loader)  # before: a mismatched sample crashed the collator (and the worker, and training)
    assert sum(len(b.keys) for b in batches) == index and all(k.startswith("ok") for b in batches for k in b.keys)
    assert loader.skipped == {reason: len(makers) for reason, makers in BAD.items()}
    _, loss = inversion_model(batches[0])
    assert torch.isfinite(loss)


def test_the_expected_embedding_width_comes_from_the_model(inversion_model, mask_llava):
    assert attached(inversion_model).processor.objects.embedding_width == DE
    assert attached(inversion_model).processor.objects.masks
    pooled = attached(mask_llava).processor  # masked pooling: needs masks, never reads stored embeddings
    assert pooled.objects.masks and pooled.objects.embedding_width is None
    from tokencompose.data.shards import decode_sample

    out = pooled(decode_sample(edited(1, embeddings=lambda k: np.zeros((k, DE + 8), np.float16))))
    assert out.embeddings is None  # dropped: the model does not read them, so widths cannot clash


def test_without_a_model_annotations_must_agree_and_the_collator_names_mixed_widths(datamodule_processor):
    from tokencompose.data.processing import SampleProcessor
    from tokencompose.data.shards import decode_sample

    free = SampleProcessor(datamodule_processor.transform, datamodule_processor.conversations)  # objects=None
    with pytest.raises(BadSample, match="annotation count mismatch"):
        free(decode_sample(edited(1, record=lambda r: r["objects"].pop())))
    a = free(decode_sample(dict(encoded(1), __key__="a")))
    b = free(decode_sample(dict(edited(2, embeddings=lambda k: np.zeros((k, DE + 8), np.float16)), __key__="b")))
    with pytest.raises(ValueError, match="different widths.*'a': 32.*'b': 40"):
        Collator(pad_token_id=0)([a, b])


def conversation(*turns: str) -> list[dict]:
    return [{"from": ("human", "gpt")[i % 2], "value": text} for i, text in enumerate(turns)]


def text_shard(tmp_path, conversations: dict[str, list[dict]]):
    sample = encoded(0, embeddings=None)
    write_shard(tmp_path / "t.tar", [
        {"__key__": key, "png": sample["png"], MASKS_KEY: sample[MASKS_KEY],
         "json": json.dumps({**json.loads(sample["json"]), "conversations": turns}).encode()}
        for key, turns in conversations.items()
    ])
    return str(tmp_path / "t.tar")


def test_samples_left_without_a_target_token_are_skipped_in_training(tmp_path, mask_llava):
    data = attached(mask_llava)
    turns = {
        "ok": conversation("<image>\nis there a red circle ?", "yes"),
        "no-answer": conversation("<image>\nhow many shapes are there ?"),  # ends with the question
        "cut-answer": conversation("<image>\nhow many shapes are there ? is there a red circle ?", "yes"),
    }
    encoder = data.processor.conversations
    length = {key: encoder.expanded_length(encoder.encode(t).input_ids) for key, t in turns.items()}  # untruncated
    encoder.max_length = length["ok"]  # "ok" just fits; "cut-answer" loses more than its answer ("yes </s>")
    assert length["cut-answer"] > encoder.max_length + 2 and length["no-answer"] < encoder.max_length
    shard = text_shard(tmp_path, turns)
    from dataclasses import replace

    train = ShardStream([shard], replace(data.processor, require_target=True), batch_size=1, shuffle=False)
    assert [s.key for s in train] == ["ok"]
    assert train.skipped == {"no target token": 1, "no target after truncation": 1}
    evaluation = ShardStream([shard], data.processor, batch_size=1, shuffle=False)  # prediction needs no answer
    assert [s.key for s in evaluation] == ["ok", "no-answer", "cut-answer"]


def test_a_batch_of_answer_less_samples_no_longer_reaches_the_loss(tmp_path, mask_llava):
    """The loss of a batch whose samples have no target is NaN; such samples never reach training now."""
    data = attached(mask_llava, train=text_shard(tmp_path, {
        f"q{i}": conversation("<image>\nhow many shapes are there ?") for i in range(4)
    } | {"ok": conversation("<image>\nis there a red circle ?", "yes")}), batch_size=4, train_mode="exact")
    batch = data.transform.collator()([data.processor(s) for s in _decoded(data.shards("train").urls[0])[:4]])
    assert torch.isnan(mask_llava(batch)[1])  # what training used to see
    batches = list(data.train_dataloader())
    assert [b.keys for b in batches] == [["ok"]]


def _decoded(url):
    from tokencompose.data import iterate_shard
    from tokencompose.data.shards import decode_sample

    return [decode_sample(raw) for raw in iterate_shard(url)]
