"""The annotate job on tiny random DETR, SAM and CLIP over small synthetic shards."""

import json
import shutil
import tarfile

import pytest
import torch

from tests.recipe_utils import REPO
from tokencompose.annotate import ShardListDataModule, summary
from tokencompose.cli import annotate
from tokencompose.data import ShardDataModule, iterate_shard, write_shard
from tokencompose.data.shards import EMBEDDINGS_KEY, MASKS_KEY
from tokencompose.recipes import AnnotateCLI

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
    data.transform = model.data_transform()
    batch = next(iter(data.val_dataloader()))
    assert batch.objects.embeddings is not None and batch.objects.embeddings.shape[-1] == model.encoder.embed_dim
    _, loss = model(batch)
    loss.backward()
    assert torch.isfinite(loss)



@pytest.fixture
def mixed(synthetic_root, tmp_path):
    """m.tar: image samples (two whose keys clash once sanitised), a text-only and a two-image sample, a key with
    `/` and `..`, a member with an odd extension; t.tar: a truncated shard."""
    inputs = tmp_path / "mixed"
    inputs.mkdir()
    source = [{k: v for k, v in s.items() if k != "__url__"} for s in iterate_shard(str(synthetic_root / "train-000000.tar"))]
    text = {"__key__": "../../escape/text", "json": json.dumps({"conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}).encode()}
    multi = {"__key__": "multi", "0.png": source[3]["png"], "1.png": source[4]["png"], "json": json.dumps({"conversations": [
        {"from": "human", "value": "<image>\n<image>\nsame?"}, {"from": "gpt", "value": "no"}]}).encode()}
    odd = dict(source[0], **{"weird$ext": b"x"})
    write_shard(inputs / "m.tar", [odd, text, dict(source[1], __key__="dup/1"), multi, dict(source[2], __key__="dup_1")])
    write_shard(inputs / "whole.tar", source[5:8])
    data = (inputs / "whole.tar").read_bytes()
    (inputs / "t.tar").write_bytes(data[: len(data) // 2])
    (inputs / "whole.tar").unlink()
    return inputs, text, multi


def test_text_only_and_multi_image_pass_through_names_are_sanitised_truncated_shards_skipped(mixed, tmp_path):
    inputs, text, multi = mixed
    output = tmp_path / "out"
    argv = args(inputs, output)
    argv[argv.index("--data.inputs") + 1] = f"{inputs}/{{m,t}}.tar"
    output.mkdir()
    (output / ".m.tar.tmp-4242").write_bytes(b"a killed run's partial shard")
    reports = {r.shard.rsplit("/", 1)[-1]: r for r in annotate(argv)}
    assert not [p for p in output.iterdir() if p.name.startswith(".")]
    m, t = reports["m.tar"], reports["t.tar"]
    assert (m.samples_in, m.samples_out, m.annotated, m.text_only, m.multi_image) == (5, 5, 3, 1, 1)
    assert m.renamed_keys == 3 and len(m.dropped_members) == 1 and m.error is None
    assert "truncated shard" in t.error and not (output / "t.tar").exists()  # reported, not fatal to the job
    assert "1 unreadable input shard(s) skipped" in summary(list(reports.values())) and "t.tar" in summary(list(reports.values()))
    with tarfile.open(output / "m.tar") as tar:
        names = tar.getnames()
    assert not [n for n in names if "/" in n or ".." in n or "$" in n]
    samples = {s["__key__"]: s for s in iterate_shard(str(output / "m.tar"))}
    assert len(samples) == 5 and {"dup_1", "dup_1_1"} <= set(samples)
    passed = samples["______escape_text"]
    assert passed["json"] == text["json"] and MASKS_KEY not in passed  # unannotated, unchanged
    assert samples["multi"]["0.png"] == multi["0.png"] and samples["multi"]["1.png"] == multi["1.png"]
    assert MASKS_KEY not in samples["multi"] and MASKS_KEY in samples["dup_1"] and EMBEDDINGS_KEY in samples["dup_1_1"]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["shards"]["m.tar"]["samples"] == 5 and manifest["samples"] == 5 and not manifest["complete"]
    assert list(manifest["failed"]) == ["t.tar"] and "truncated shard" in manifest["failed"]["t.tar"]["error"]
    again = {r.shard.rsplit("/", 1)[-1]: r for r in annotate(argv)}
    assert again["m.tar"].skipped_existing and again["t.tar"].error  # the unreadable one is retried


def test_a_converted_folder_is_annotated_into_a_folder_training_can_count(tmp_path):
    """convert-llava -> annotate -> ShardDataModule's sample count, folders all the way."""
    from tests.data.test_convert_llava import fabricate
    from tokencompose.data.convert_llava import convert_llava
    from tokencompose.data.sources import resolve_shards

    source, images, _ = fabricate(tmp_path)
    converted = tmp_path / "converted"
    report = convert_llava(str(source), str(images), str(converted), shard_bytes=4000, workers=1)
    output = tmp_path / "annotated"
    argv = args(converted, output)
    argv[argv.index("--data.inputs") + 1] = str(converted)
    reports = annotate(argv)
    assert len(reports) == report.shards and sum(r.text_only for r in reports) == 3  # text-only samples kept
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["samples"] == report.samples == 10
    assert sorted(manifest["shards"]) == sorted(json.loads((converted / "manifest.json").read_text())["shards"])
    assert resolve_shards(str(output), "data.train").samples == 10  # the annotated folder, as training reads it
    first = sorted(manifest["shards"])[0]
    (output / f"{first}.report.json").unlink()  # a shard without its report (an older run's) is redone
    again = {r.shard.rsplit("/", 1)[-1]: r for r in annotate(argv)}
    assert not again[first].skipped_existing and all(r.skipped_existing for n, r in again.items() if n != first)
    after = json.loads((output / "manifest.json").read_text())
    assert after["complete"] and {n: i["samples"] for n, i in after["shards"].items()} == {
        n: i["samples"] for n, i in manifest["shards"].items()}


def test_inputs_that_cannot_be_listed_are_named(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="bare is a folder without manifest.json"):
        ShardListDataModule(inputs=str(tmp_path / "bare"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text(json.dumps({"complete": False, "shards": {}, "samples": 0}))
    with pytest.raises(ValueError, match="did not finish"):
        ShardListDataModule(inputs=str(tmp_path / "half"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "manifest.json").write_text(json.dumps({"shards": {"../x.tar": {"samples": 1}}, "samples": 1}))
    with pytest.raises(ValueError, match="not plain file names"):
        ShardListDataModule(inputs=str(tmp_path / "odd"))
    write_shard(tmp_path / "part-000000.tar", [{"__key__": "k", "json": b"{}"}])
    with pytest.raises(ValueError, match=r"1 of 2 shard\(s\) do not exist: .*part-000001.tar"):
        ShardListDataModule(inputs=str(tmp_path / "part-{000000..000001}.tar"))
    for folder in "ab":
        write_shard(tmp_path / folder / "s.tar", [{"__key__": "k", "json": b"{}"}])
    with pytest.raises(ValueError, match="same name would write the same output shard"):
        ShardListDataModule(inputs=[str(tmp_path / "a" / "s.tar"), str(tmp_path / "b" / "s.tar")])


def test_the_full_size_recipe_reads_the_converters_folder():
    from tests.recipe_utils import ParseOnlyAnnotateCLI

    cli = ParseOnlyAnnotateCLI(args=["--config", str(REPO / "recipes" / "annotate" / "detr_sam_vit_h.yaml")])
    inputs = cli.config["data"]["inputs"]
    assert "{" not in inputs and not inputs.endswith(".tar")  # a folder whose manifest.json lists the shards
