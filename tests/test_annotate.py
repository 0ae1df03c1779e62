"""The annotate job on tiny random DETR, SAM and CLIP over small synthetic shards."""

import json
import shutil

import pytest
import torch

from tests.recipe_utils import REPO
from tokencompose.cli import AnnotateCLI, annotate
from tokencompose.data import ShardDataModule, iterate_shard, write_shard
from tokencompose.data.shards import EMBEDDINGS_KEY, MASKS_KEY

RECIPE = REPO / "recipes" / "annotate" / "tiny.yaml"


@pytest.fixture
def shards(synthetic_root, tmp_path):
    """Two input shards: one good, one with a corrupt image in the middle."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_root / "val-000000.tar", inputs / "a.tar")
    samples = list(iterate_shard(str(synthetic_root / "train-000000.tar")))[:6]
    clean = [{k: v for k, v in s.items() if k != "__url__"} for s in samples]
    clean[2]["png"] = b"\x89PNG broken"
    write_shard(inputs / "b.tar", clean)
    return inputs


def args(inputs, output):
    return ["--config", str(RECIPE), "--data.inputs", f"{inputs}/{{a,b}}.tar", "--data.synthetic", "null",
            "--model.output_dir", str(output), "--model.annotator.init_args.inversion.iterations", "2"]


def test_annotate_writes_complete_shards_and_lists_corrupt_images(shards, tmp_path):
    output = tmp_path / "out"
    reports = {r.shard.rsplit("/", 1)[-1]: r for r in annotate(args(shards, output))}
    assert reports["a.tar"].samples_in == reports["a.tar"].samples_out == 32
    assert reports["b.tar"].samples_in == 6 and reports["b.tar"].samples_out == 5
    assert len(reports["b.tar"].corrupt) == 1 and reports["b.tar"].corrupt[0].startswith("0000-00000002")
    report = json.loads((output / "b.tar.report.json").read_text())
    assert report["corrupt"] == reports["b.tar"].corrupt
    sample = next(iterate_shard(str(output / "a.tar")))
    assert MASKS_KEY in sample and EMBEDDINGS_KEY in sample and "png" in sample
    record = json.loads(sample["json"])
    assert "DetrSamProposer" in record["annotation"]["by"] and record["conversations"]


def test_killed_run_resumes_without_rewriting_finished_shards(shards, tmp_path):
    """A run stopped after its first shard (shards are written whole: see test_write_shard_is_atomic)."""
    output = tmp_path / "out"
    first_run = args(shards, output)
    first_run[first_run.index("--data.inputs") + 1] = f"{shards}/a.tar"
    annotate(first_run)
    assert (output / "a.tar").exists() and not (output / "b.tar").exists()
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no temporary files left
    first = (output / "a.tar").stat().st_mtime_ns
    reports = annotate(args(shards, output))
    assert [r.skipped_existing for r in reports] == [True, False]
    assert (output / "a.tar").stat().st_mtime_ns == first and (output / "b.tar").exists()


def test_training_reads_stored_annotations(shards, tmp_path, text_tokenizer):
    from tests.conftest import build_mask_llava
    from tokencompose.tokenizers import (
        GlobalTokenizer,
        MaskInversionEmbedding,
        ObjectTokenizer,
        PatchPoolTokenizer,
    )

    output = tmp_path / "out"
    cli = AnnotateCLI(args=args(shards, output))
    cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    model = build_mask_llava(
        text_tokenizer,
        encoder=cli.model.encoder,
        tokenizers={"cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=2),
                    "objects": ObjectTokenizer(MaskInversionEmbedding(to_patch_width=True), max_objects=4)},
    )
    data = ShardDataModule(train=str(output / "a.tar"), val=str(output / "a.tar"), batch_size=4)
    data.attach(model)
    batch = next(iter(data.val_dataloader()))
    assert batch.objects.embeddings is not None and batch.objects.embeddings.shape[-1] == model.encoder.embed_dim
    _, loss = model(batch)
    loss.backward()
    assert torch.isfinite(loss)

