"""Several images per sample (a video is its frames) through shards, the DataModule and LLaVA-Mini."""

import json
from functools import partial

import numpy as np
import torch
from torch.testing import assert_close

from tests.conftest import build_mask_llava, raw_samples
from tokencompose.data import ShardDataModule, write_shard
from tokencompose.data.shards import encode_png
from tokencompose.llm import ModalityPreFusion
from tokencompose.tokenizers import PatchPoolTokenizer, QueryCompressor


def llava_mini(text_tokenizer):
    return build_mask_llava(
        text_tokenizer,
        tokenizers={"patch": PatchPoolTokenizer(grid=None), "compressed": partial(QueryCompressor, side=1, heads=4)},
        scaler=None, text_fusion=partial(ModalityPreFusion, num_layers=2, context="patch"),
    )


def mixed_shard(tmp_path):
    frames = [s["png"] for s in raw_samples(3, seed=5)]
    single = raw_samples(1, seed=6)[0]
    turns = lambda question, answer: [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]  # noqa: E731
    samples = [
        {"__key__": "video", **{f"{i}.png": encode_png(np.asarray(f)) for i, f in enumerate(frames)},
         "json": json.dumps({"conversations": turns("<image><image><image>\nhow many shapes are there ?", "three")}).encode()},
        {"__key__": "image", "png": encode_png(np.asarray(single["png"])),
         "json": json.dumps({"conversations": turns("<image>\nis there a red circle ?", "yes")}).encode()},
        {"__key__": "text", "json": json.dumps({"conversations": turns("is there a red circle ?", "no")}).encode()},
    ]
    write_shard(tmp_path / "mixed.tar", samples)
    return tmp_path / "mixed.tar"


def test_frames_and_images_stream_in_placeholder_order(tmp_path, text_tokenizer):
    model = llava_mini(text_tokenizer)
    data = ShardDataModule(val=str(mixed_shard(tmp_path)), batch_size=3)
    data.transform = model.data_transform()
    batch = next(iter(data.val_dataloader()))
    assert batch.keys == ["video", "image", "text"]
    assert batch.pixels.shape == (4, 3, 64, 64) and batch.images_per_sample.tolist() == [3, 1, 0]
    fused = model.fuse(batch)
    visual_slots = (fused.visual_kind >= 0).sum(1).tolist()
    assert visual_slots == [3, 1, 0]  # LLaVA-Mini: one token per frame, per image, none for text
    _, loss = model(batch)
    loss.backward()
    assert torch.isfinite(loss)
    records = model.predict_step(batch, 0)
    assert [r["visual_tokens"] for r in records] == [3, 1, 0]


def test_fused_text_is_the_mean_over_frames(tmp_path, text_tokenizer):
    model = llava_mini(text_tokenizer).eval()
    data = ShardDataModule(val=str(mixed_shard(tmp_path)), batch_size=1)
    data.transform = model.data_transform()
    video = next(iter(data.val_dataloader()))
    with torch.no_grad():
        visual = model.encode_images(video.pixels)
        to_llm = model.llm_positions(visual)
        text = model.llm.embed(video.input_ids)
        instruction = video.attention_mask.bool() & (video.input_ids >= 0) & (video.labels == -100)
        per_frame = [
            model.text_fusion.run_layers(visual.tokens[f : f + 1, ~to_llm], visual.valid[f : f + 1, ~to_llm],
                                         visual.tokens[f : f + 1, to_llm], text, instruction)[0]
            for f in range(3)
        ]
        fused, _ = model.text_fusion(text, instruction, visual, to_llm, video.image_counts(), None)
    assert_close(fused, torch.stack(per_frame).mean(0))


def test_batches_of_text_only_samples_train(tmp_path, text_tokenizer):
    model = llava_mini(text_tokenizer)
    data = ShardDataModule(val=str(mixed_shard(tmp_path)), batch_size=1)
    data.transform = model.data_transform()
    text_only = list(data.val_dataloader())[2]
    assert text_only.pixels.shape[0] == 0
    _, loss = model(text_only)
    assert torch.isfinite(loss)
