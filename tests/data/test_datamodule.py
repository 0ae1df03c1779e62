import json
import pickle

import pytest
import torch

from tests.conftest import build_mask_llava
from tokencompose.data import (
    EpochLoader,
    ShardDataModule,
    ShardStream,
    SyntheticShapes,
    decode_sample,
    iterate_shard,
    write_shard,
)
from tokencompose.data.processing import ImageTransform


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch.keys]


@pytest.fixture
def datamodule(synthetic_root, text_tokenizer):
    dm = ShardDataModule(synthetic=SyntheticShapes(root=str(synthetic_root), train_samples=96, val_samples=32,
                                                   samples_per_shard=32), batch_size=8)
    dm.transform = build_mask_llava(text_tokenizer).data_transform()
    return dm


def test_synthetic_shards_are_complete_and_not_rewritten(synthetic_root):
    shards = sorted(synthetic_root.glob("train-*.tar"))
    assert len(shards) == 3 and (synthetic_root / "text_tokenizer" / "tokenizer.json").exists()
    assert sum(1 for shard in shards for _ in iterate_shard(str(shard))) == 96
    before = [s.stat().st_mtime_ns for s in shards]
    SyntheticShapes(root=str(synthetic_root), train_samples=96, val_samples=32, samples_per_shard=32).write()
    assert [s.stat().st_mtime_ns for s in shards] == before


def test_batches_carry_masks_and_generation_prompts(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    assert batch.pixels.shape == (8, 3, 64, 64) and batch.objects.masks.shape[2:] == (64, 64)
    assert (batch.prompt_mask[:, -1] == 1).all()  # left padded
    assert (batch.attention_mask[:, 0] == 1).all()  # right padded


def test_val_pass_is_exact_and_train_epochs_reshuffle(datamodule):
    val = keys_of(datamodule.val_dataloader())
    assert len(val) == len(set(val)) == 32
    datamodule.train_mode = "exact"
    train = datamodule.train_dataloader()
    first, second = keys_of(train), keys_of(train)
    assert sorted(first) == sorted(second) and len(set(first)) == 96
    assert first != second


def test_resampled_mode_has_a_fixed_length_and_reshuffles(datamodule):
    loader = datamodule.train_dataloader()
    assert len(loader) == 12  # 96 samples / batch 8, one rank
    first, second = [b.keys for b in loader], [b.keys for b in loader]
    assert len(first) == len(second) == 12 and all(len(k) == 8 for k in first)
    assert first != second


@pytest.mark.parametrize("mode", ["exact", "resampled"])
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_the_same_sequence(datamodule, workers, mode):
    datamodule.num_workers = workers
    datamodule.train_mode = mode
    loader = datamodule.train_dataloader()
    keys_of(loader)  # epoch 0
    epoch1 = [batch.keys for batch in loader]
    resumed = datamodule.train_dataloader()
    resumed.resume(epoch=1, batches=5)
    assert [batch.keys for batch in resumed] == epoch1[5:]


def test_bad_samples_are_skipped_and_counted_and_pickle_is_never_loaded(tmp_path, synthetic_root):
    good = list(iterate_shard(str(sorted(synthetic_root.glob("val-*.tar"))[0])))[:3]
    payload = pickle.dumps({"boom": 1})
    samples = [
        {"__key__": "ok", **{k: v for k, v in good[0].items() if not k.startswith("__")}},
        {"__key__": "broken-png", "png": b"not a png", "json": good[1]["json"]},
        {"__key__": "pickled", "pyd": payload, "json": good[2]["json"], "png": good[2]["png"]},
    ]
    shard = tmp_path / "bad.tar"
    write_shard(shard, samples)
    decoded = decode_sample(next(s for s in iterate_shard(str(shard)) if s["__key__"] == "pickled"))
    assert decoded["pyd"] == payload  # left as bytes, never unpickled

    def processor(sample):
        assert not isinstance(sample.get("pyd"), dict)
        return {"key": sample["__key__"], "image": sample["png"].size}

    stream = ShardStream([str(shard)], processor, batch_size=1, shuffle=False)
    assert [s["key"] for s in stream] == ["ok", "pickled"]
    assert stream.skipped == {"corrupt image": 1}


def test_write_shard_is_atomic(tmp_path):
    shard = tmp_path / "s.tar"

    def failing():
        yield {"__key__": "a", "txt": b"x"}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_shard(shard, failing())
    assert not shard.exists() and not list(tmp_path.iterdir())


def test_image_transform_pads_with_mean_and_keeps_masks_aligned():
    from PIL import Image

    image = Image.new("RGB", (40, 20), (255, 0, 0))
    masks = torch.zeros(1, 20, 40, dtype=torch.bool)
    masks[0, :, :20] = True  # left half of the image
    transform = ImageTransform(40, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels, resized = transform(image, masks.numpy())
    assert pixels.shape == (3, 40, 40) and resized.shape == (1, 40, 40)
    assert resized[0, 10:30, :20].all() and not resized[0, :10].any()  # padded by 10 rows on top
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([0.0039, 0.0039, 0.0039]), atol=0.01)  # mean colour
    assert torch.allclose(pixels[:, 20, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_shards_of_an_older_format_are_rewritten(tmp_path):
    import json

    settings = SyntheticShapes(root=str(tmp_path), train_samples=8, val_samples=4, samples_per_shard=8)
    settings.write()
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1}))
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(b"old")
    settings.write()
    assert shard.stat().st_size > 3 and json.loads((tmp_path / "manifest.json").read_text())["format"] == 2


def bad_sample_shard(tmp_path, synthetic_root):
    good = list(iterate_shard(str(sorted(synthetic_root.glob("val-*.tar"))[0])))[:1][0]
    record = json.loads(good["json"])
    variants = {
        "ok": record,
        "no-conversations": {k: v for k, v in record.items() if k != "conversations"},
        "bad-role": {**record, "conversations": [{"from": "robot", "value": "<image>\nhi"}, record["conversations"][1]]},
        "no-placeholder": {**record, "conversations": [{"from": "human", "value": "hi"}, record["conversations"][1]]},
        "two-placeholders": {**record, "conversations": [{"from": "human", "value": "<image> <image>"}, record["conversations"][1]]},
    }
    masks = good["objects.masks.npy"]
    samples = [{"__key__": key, "png": good["png"], "objects.masks.npy": masks, "json": json.dumps(value).encode()}
               for key, value in variants.items()]
    samples.append({"__key__": "broken-image", "png": b"junk", "objects.masks.npy": masks, "json": good["json"]})
    shard = tmp_path / "bad.tar"
    write_shard(shard, samples)
    return shard


def test_each_bad_data_case_is_skipped_and_counted(tmp_path, synthetic_root, datamodule):
    shard = bad_sample_shard(tmp_path, synthetic_root)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    stream = ShardStream([str(shard), str(truncated)], datamodule.processor, batch_size=1, shuffle=False)
    kept = [s.key for s in stream]
    assert kept[0] == "ok" and set(kept) <= {"ok", "no-conversations", "bad-role"}  # truncation keeps a prefix
    assert stream.skipped["missing conversations"] >= 1 and stream.skipped["unknown role"] >= 1
    assert stream.skipped["image placeholder missing"] == 1 and stream.skipped["image placeholder repeated"] == 1
    assert stream.skipped["corrupt image"] == 1 and stream.skipped["truncated shard"] == 1
    loader = EpochLoader(ShardStream([str(shard)], datamodule.processor, batch_size=1, shuffle=False),
                         collate_fn=datamodule.transform.collator())
    assert len(list(loader)) == 1 and sum(loader.skipped.values()) == 5  # reported at the end of the pass


def test_sequence_guard_runs_before_batching(datamodule, synthetic_root):
    datamodule.processor.conversations.max_length = 5
    stream = ShardStream([str(synthetic_root / "val-000000.tar")], datamodule.processor, batch_size=4, shuffle=False)
    assert list(stream) == [] and stream.skipped == {"sequence too long": 32}


def test_grouping_by_modality_and_length(datamodule, synthetic_root, tmp_path):
    records = list(iterate_shard(str(synthetic_root / "val-000000.tar")))
    samples = []
    for i, raw in enumerate(records[:16]):
        sample = {k: v for k, v in raw.items() if k != "__url__"}
        if i % 2:  # half of them text-only
            record = json.loads(sample.pop("json"))
            record["conversations"][0]["value"] = record["conversations"][0]["value"].replace("<image>\n", "")
            sample = {"__key__": sample["__key__"], "json": json.dumps(record).encode()}
        samples.append(sample)
    shard = tmp_path / "mixed.tar"
    write_shard(shard, samples)
    stream = ShardStream([str(shard)], datamodule.processor, batch_size=4, shuffle=True, group_by_modality_length=True)
    out = list(stream)
    assert len(out) == 16
    for start in range(0, 16, 4):
        assert len({s.has_image for s in out[start : start + 4]}) == 1


def test_skip_totals_reach_the_loader_from_worker_processes(tmp_path, synthetic_root, datamodule):
    shard = bad_sample_shard(tmp_path, synthetic_root)
    loader = EpochLoader(ShardStream([str(shard)] * 2, datamodule.processor, batch_size=1, shuffle=False),
                         collate_fn=datamodule.transform.collator(), num_workers=2)
    assert len(list(loader)) == 2 and sum(loader.skipped.values()) == 10




def test_batches_from_worker_processes_equal_in_process_batches(datamodule):
    in_process = list(datamodule.val_dataloader())
    datamodule.num_workers = 1
    from_worker = list(datamodule.val_dataloader())
    assert len(in_process) == len(from_worker) == 4
    for a, b in zip(in_process, from_worker, strict=True):
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.input_ids, b.input_ids)
        assert torch.equal(a.objects.masks, b.objects.masks) and a.keys == b.keys


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_pass_covers_every_sample_once_per_worker_layout(datamodule, workers):
    datamodule.num_workers = workers
    datamodule.train_mode = "exact"
    keys = keys_of(datamodule.train_dataloader())
    assert len(keys) == len(set(keys)) == 96


def test_shards_stream_through_pipe_commands(synthetic_root, datamodule):
    url = f"pipe:cat {synthetic_root / 'val-000000.tar'}"
    stream = ShardStream([url], datamodule.processor, batch_size=4, shuffle=False)
    assert len(list(stream)) == 32


def keyed_shards(tmp_path, sizes: dict[str, int]) -> dict[str, int]:
    counts = {}
    for name, size in sizes.items():
        write_shard(tmp_path / name, [{"__key__": f"{name[:-4]}-{i:03d}", "txt": b"x"} for i in range(size)])
        counts[str(tmp_path / name)] = size
    return counts


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_training_over_ranks_gives_every_rank_the_same_batches_and_covers_every_sample(tmp_path, monkeypatch, workers):
    """Uneven shards (30, 20, 10 samples) over 2 ranks: before, rank 0 read 40 samples an epoch and rank 1 20, so
    their epochs drifted apart (and with them the shard split); now each runs ceil(60 / (2 x 4)) = 8 batches."""
    import tokencompose.data.stream as stream_module

    counts = keyed_shards(tmp_path, {"a.tar": 30, "b.tar": 20, "c.tar": 10})
    epochs = {}
    for rank in (0, 1):
        monkeypatch.setattr(stream_module, "rank_and_world", lambda rank=rank: (rank, 2))
        stream = ShardStream(list(counts), lambda s: {"key": s["__key__"]}, batch_size=4, shuffle=True, mode="exact",
                             batches_per_rank=8, counts=counts, even_ranks=True, buffer_size=16)
        loader = EpochLoader(stream, num_workers=workers, collate_fn=lambda b: [s["key"] for s in b])
        assert len(loader) == 8
        epochs[rank] = [[key for batch in loader for key in batch] for _ in range(2)]
    for epoch in range(2):
        keys = epochs[0][epoch] + epochs[1][epoch]
        assert len(epochs[0][epoch]) == len(epochs[1][epoch]) == 32
        assert len(set(keys)) == 60 and len(keys) - len(set(keys)) == 4  # the last block wraps: 4 seen twice
    assert epochs[0][0] != epochs[0][1]


def test_exact_training_over_ranks_tops_up_what_bad_samples_lost(tmp_path, monkeypatch):
    import tokencompose.data.stream as stream_module

    counts = keyed_shards(tmp_path, {"a.tar": 30, "b.tar": 20, "c.tar": 10})

    def processor(sample):
        if sample["__key__"].startswith("b-"):
            raise ValueError("bad")
        return {"key": sample["__key__"]}

    for rank in (0, 1):
        monkeypatch.setattr(stream_module, "rank_and_world", lambda rank=rank: (rank, 2))
        stream = ShardStream(list(counts), processor, batch_size=4, shuffle=False, mode="exact",
                             batches_per_rank=8, counts=counts, even_ranks=True)
        assert len(list(stream)) == 32 and all(not s["key"].startswith("b-") for s in stream)


def test_exact_training_over_ranks_needs_sample_counts(tmp_path):
    counts = keyed_shards(tmp_path, {"a.tar": 3})
    with pytest.raises(ValueError, match="even_ranks needs the sample count"):
        ShardStream(list(counts), lambda s: s, batch_size=1, shuffle=False, batches_per_rank=3, even_ranks=True)
