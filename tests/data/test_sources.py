"""Shard specs: converted directories (manifest.json), patterns that match nothing, epoch length from the
shards actually configured."""

import json
import logging

import pytest

from tests.data.conftest import attached
from tests.data.test_convert_llava import fabricate
from tokencompose.data import SyntheticShapes, resolve_shards, write_shard
from tokencompose.data.convert_llava import convert_llava


def shards_with_manifest(folder, counts: dict[str, int]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in counts.items():
        write_shard(folder / name, [{"__key__": f"{name[:-4]}-{i}", "txt": b"x"} for i in range(count)])
    manifest = {"samples": sum(counts.values()), "shards": {n: {"samples": c, "bytes": 1} for n, c in counts.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_directory_is_its_manifests_shards_in_natural_order_with_counts(tmp_path):
    folder = shards_with_manifest(tmp_path / "conv", {"shard-000010.tar": 3, "shard-000002.tar": 5, "shard-000001.tar": 2})
    shards = resolve_shards(str(folder), "data.train")
    assert [u.rsplit("/", 1)[-1] for u in shards.urls] == ["shard-000001.tar", "shard-000002.tar", "shard-000010.tar"]
    assert shards.samples == 10
    assert resolve_shards([str(folder), str(folder / "shard-000002.tar")], "data.train").samples == 15


def test_a_directory_without_manifest_is_its_tars_with_a_warning_and_no_count(tmp_path, caplog):
    folder = shards_with_manifest(tmp_path / "plain", {"s-2.tar": 1, "s-10.tar": 1})
    (folder / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING):
        shards = resolve_shards(str(folder), "data.val")
    assert [u.rsplit("/", 1)[-1] for u in shards.urls] == ["s-2.tar", "s-10.tar"] and shards.samples is None
    assert "has no manifest.json" in caplog.text
    with pytest.raises(ValueError, match=r"data.val: directory .* has neither manifest.json nor any \*.tar"):
        resolve_shards(str(tmp_path), "data.val")


@pytest.mark.parametrize("spec, message", [
    ("{root}/missing", r"data.train: 1 of 1 shard\(s\) do not exist: .*missing"),
    ("{root}/shards-{{000000..000665}}.tar", r"data.train: 666 of 666 shard\(s\) do not exist: .*shards-000000.tar, "
                                             r".*shards-000001.tar, .*shards-000002.tar and 663 more"),
    ("{root}/*.tar", r"data.train: the pattern .* matches no file"),
])
def test_specs_that_name_nothing_fail_naming_the_key(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_shards(spec.format(root=tmp_path), "data.train")


def test_a_broken_manifest_is_named(tmp_path):
    folder = shards_with_manifest(tmp_path / "conv", {"shard-000000.tar": 2})
    (folder / "manifest.json").write_text(json.dumps({"shards": {"shard-000000.tar": {"bytes": 3}}}))
    with pytest.raises(ValueError, match="shard-000000.tar' has no valid 'samples' count"):
        resolve_shards(str(folder), "data.train")
    (folder / "manifest.json").write_text(json.dumps({"format": 2}))  # the synthetic root's manifest
    with pytest.raises(ValueError, match="lists no shards"):
        resolve_shards(str(folder), "data.train")


def test_an_overridden_train_split_takes_its_own_sample_count(tmp_path, synthetic_root, patch_model):
    synthetic = SyntheticShapes(root=str(synthetic_root), train_samples=96, val_samples=32, samples_per_shard=32)
    folder = shards_with_manifest(tmp_path / "conv", {"shard-000000.tar": 40, "shard-000001.tar": 24})
    data = attached(patch_model, train=str(folder), synthetic=synthetic, batch_size=8)
    assert data.batches_per_rank() == 64 // 8  # before: 96 // 8, the synthetic count, whatever data.train was
    listed = attached(patch_model, train=str(folder / "shard-000000.tar"), synthetic=synthetic, batch_size=8)
    assert listed.batches_per_rank() == 40 // 8  # the manifest next to a named shard gives its count
    (folder / "manifest.json").unlink()
    unlisted = attached(patch_model, train=str(folder / "shard-000000.tar"), synthetic=synthetic, batch_size=8)
    with pytest.raises(ValueError, match="sample count of 1 training shard.*data.train_batches_per_epoch"):
        unlisted.batches_per_rank()  # before: the synthetic 96 samples were used for an unrelated shard
    assert attached(patch_model, synthetic=synthetic, batch_size=8).batches_per_rank() == 12


@pytest.mark.slow
def test_convert_then_fit_on_the_converted_directory(tmp_path):
    """Fabricated LLaVA JSON -> today's convert_llava -> a tiny recipe trained on the directory it wrote."""
    from tests.recipe_utils import REPO
    from tokencompose.recipes import TokenComposeCLI

    source, images, _ = fabricate(tmp_path, count=12)
    out = tmp_path / "converted"
    convert_llava(str(source), str(images), str(out), shard_bytes=4000, workers=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_shards"] > 1 and all(name.startswith("shard-") for name in manifest["shards"])
    args = ["--config", str(REPO / "recipes/tiny/llava15.yaml"), "--data.train", str(out), "--data.val", str(out),
            "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.max_steps", "3",
            "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    cli = TokenComposeCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3
    assert cli.datamodule.batches_per_rank() == manifest["samples"] // 2  # epoch length from the manifest
    assert cli.datamodule.shards("train").urls == [str(out / n) for n in sorted(manifest["shards"])]
