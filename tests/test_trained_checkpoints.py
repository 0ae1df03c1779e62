"""A trained run, as a user meets it: ``last.ckpt`` where the recipe says, the recipe inside it (``tokencompose.load``
rebuilds the model without the YAML), ``predict`` writing its predictions, ``ask`` answering about one picture,
``export`` refusing what Hugging Face LLaVA cannot hold and writing a model card with the scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import tokencompose
from tests.recipe_utils import REPO
from tokencompose.cli import main
from tokencompose.data.reader import read_shard
from tokencompose.model import RECIPE_KEY

LLAVA = REPO / "recipes" / "tiny" / "llava15.yaml"


def data_args(root: Path) -> list[str]:
    """The synthetic session data, small; unlike ``small_data`` the recipe's own callbacks stay."""
    return ["--data.synthetic.root", str(root), "--data.synthetic.train_samples", "96", "--data.synthetic.val_samples",
            "32", "--data.synthetic.samples_per_shard", "32", "--data.num_workers", "0", "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory) -> Path:
    """Two steps of the tiny LLaVA-1.5 recipe, run from a fresh folder (its relative paths land there)."""
    folder, before = tmp_path_factory.mktemp("run"), os.getcwd()
    os.chdir(folder)
    try:
        main(["fit", "--config", str(LLAVA), "--trainer.max_steps", "2", "--trainer.val_check_interval", "1000",
              *data_args(synthetic_root)])
    finally:
        os.chdir(before)
    return folder


def first_val_sample(root: Path) -> dict:
    return next(read_shard(str(root / "val-000000.tar")))


def test_fit_writes_last_ckpt_where_the_recipe_says_with_the_recipe_inside(run):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"  # the recipe's header and the README say so
    assert checkpoint.is_file()
    state = torch.load(checkpoint, weights_only=True)
    recipe = yaml.safe_load(state[RECIPE_KEY])
    assert recipe["model"]["tokenizers"]["patch"]["init_args"]["grid"] is None
    assert recipe["model"]["init_weights"] is None and "trainer" not in recipe  # the model's own section only


def test_load_rebuilds_the_model_from_the_checkpoint_alone(run, make_batch):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    weights = torch.load(checkpoint, weights_only=True)["state_dict"]
    model = tokencompose.load(checkpoint).eval()
    assert model.visual_tokens_per_image() == {"patch": 64}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)
    from tokencompose.recipes import load_recipe

    reference = load_recipe([LLAVA], checkpoint=str(checkpoint)).eval()  # the YAML + the checkpoint, as before
    batch = make_batch(model, 2)
    torch.testing.assert_close(model(batch)[0], reference(batch)[0])
    smaller = tokencompose.load(checkpoint, {"model.tokenizers.patch.init_args.grid": 2})  # a test-time budget
    assert smaller.visual_tokens_per_image() == {"patch": 4}


def test_load_says_what_is_wrong_with_a_checkpoint(run, tmp_path):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": state["state_dict"]}, bare)
    with pytest.raises(ValueError, match="has no recipe .* --config RECIPE"):
        tokencompose.load(bare)
    with pytest.raises(ValueError, match=r"does not fit .*projectors\.shared"):
        tokencompose.load(checkpoint, {"model.projector.init_args.depth": 3})


def test_predict_writes_its_predictions_in_the_run_folder(run, synthetic_root, tmp_path, capsys):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    main(["predict", "--config", str(LLAVA), "--ckpt_path", str(checkpoint), "--trainer.limit_predict_batches", "1",
          *data_args(synthetic_root), "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks", "[]"])
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 16  # one batch (data.batch_size 16)
    records = [json.loads(line) for line in lines]
    sample = first_val_sample(synthetic_root)
    conversation = json.loads(sample["json"])["conversations"]
    first = records[0]
    assert first["key"] == sample["__key__"]
    assert first["question"] == conversation[0]["value"].replace("<image>", "").strip()
    assert first["answer"] == conversation[1]["value"] and isinstance(first["prediction"], str)
    assert {r["visual_tokens"] for r in records} == {64} and all(r["seconds"] > 0 for r in records)
    assert f"16 predictions written to {tmp_path / 'predictions.jsonl'}" in capsys.readouterr().out


def test_ask_answers_as_predict_does_for_the_same_picture(run, synthetic_root, tmp_path, capsys):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    sample = first_val_sample(synthetic_root)
    image = tmp_path / "photo.png"
    image.write_bytes(sample["png"])
    question = json.loads(sample["json"])["conversations"][0]["value"].replace("<image>", "").strip()
    model = tokencompose.load(checkpoint)
    from tokencompose.data.shards import decode_sample

    batch = model.data_transform().collator()([model.data_transform().processor(training=False)(decode_sample(sample))])
    expected = model.eval().predict_step(batch, 0)[0]["prediction"]
    answer = main(["ask", "--ckpt_path", str(checkpoint), "--image", str(image), "--question", question])
    assert answer == expected
    out = capsys.readouterr().out
    assert f"Q: {question}\nA: {answer}\n" in out and "patch          64 of 64 slots" in out


def test_the_library_ask_takes_a_path_bytes_or_a_pil_image_alike(run, synthetic_root, tmp_path):
    """``tokencompose.ask`` is what the command prints and what another front end calls: the same answer for the
    picture as a file, its bytes and a decoded image, with both phases timed."""
    import io

    from PIL import Image

    from tokencompose.inference import Answer, StreamCount

    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    sample = first_val_sample(synthetic_root)
    (tmp_path / "photo.png").write_bytes(sample["png"])
    model = tokencompose.load(checkpoint)
    answers = [tokencompose.ask(model, image, "what color is the circle ?")
               for image in (tmp_path / "photo.png", sample["png"], Image.open(io.BytesIO(sample["png"])))]
    assert len({a.answer for a in answers}) == 1
    first = answers[0]
    assert isinstance(first, Answer) and first.visual_tokens == 64
    assert first.streams == {"patch": StreamCount(64, 64, True)}
    assert first.encode_seconds > 0 and first.generate_seconds > 0
    with pytest.raises(ValueError, match="--image 'bytes': corrupt image"):
        tokencompose.ask(model, b"not a picture", "?")


def test_ask_runs_as_a_command_from_the_checkpoint_alone(run, synthetic_root, tmp_path):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    (tmp_path / "photo.png").write_bytes(first_val_sample(synthetic_root)["png"])
    out = subprocess.run([sys.executable, "-m", "tokencompose", "ask", "--ckpt_path", str(checkpoint), "--image",
                          str(tmp_path / "photo.png"), "--question", "what color is the circle ?"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Q: what color is the circle ?\nA: " in out.stdout and "patch          64 of 64 slots" in out.stdout


def test_ask_computes_object_masks_online_where_the_recipe_does(tmp_path, capsys):
    from tests.test_hf_llava import random_image

    random_image(50, 70).save(tmp_path / "photo.jpg")
    recipe = REPO / "recipes" / "tiny" / "mask_llava_stage2.yaml"  # DETR -> SAM -> MaskInversion, autograd
    main(["ask", "--config", str(recipe), "--model.init_weights", "null", "--image", str(tmp_path / "photo.jpg"),
          "--question", "how many shapes are there ?", "--trainer.logger", "false"])
    out = capsys.readouterr().out
    assert "cls             1 of 1 slots" in out and "patch           4 of 4 slots" in out
    objects = next(line for line in out.splitlines() if line.strip().startswith("objects"))
    assert objects.split()[-2] == "6"  # six object slots at test time, as many valid as the image gives


def test_ask_refuses_a_recipe_that_reads_stored_masks(tmp_path):
    from tests.test_hf_llava import random_image

    random_image(64, 64).save(tmp_path / "photo.png")
    with pytest.raises(SystemExit, match="reads the object masks stored with its data .*ObjectAnnotator"):
        main(["ask", "--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--image", str(tmp_path / "photo.png"),
              "--question", "is there a red circle ?", "--trainer.logger", "false"])
    with pytest.raises(SystemExit, match="--image: .* does not exist"):
        main(["ask", "--config", str(LLAVA), "--image", str(tmp_path / "none.png"), "--question", "?",
              "--trainer.logger", "false"])


def test_export_refuses_what_hugging_face_llava_cannot_hold(tmp_path):
    with pytest.raises(SystemExit, match=r"no Hugging Face LLaVA equivalent:\n  - visual tokenizers .*\n  - scaler is"):
        main(["export", "--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--out", str(tmp_path / "hf"),
              "--trainer.logger", "false"])
    assert not (tmp_path / "hf").exists()


def test_export_writes_a_model_card_with_budget_recipe_and_scores(run, tmp_path):
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    scores = {"pope": {"scores": {"accuracy": 0.5, "f1": 0.25}, "samples": 8, "visual_tokens": 64.0}}
    (checkpoint.parent / "scores.json").write_text(json.dumps(scores))  # found beside the checkpoint
    try:
        main(["export", "--ckpt_path", str(checkpoint), "--out", str(tmp_path / "hf")])
    finally:
        (checkpoint.parent / "scores.json").unlink()
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "64 visual tokens per image (`patch`: 64)" in card
    assert "| pope | accuracy | 0.5 | 8 |" in card and "| pope | f1 | 0.25 | 8 |" in card
    recipe = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    saved = torch.load(checkpoint, weights_only=True)[RECIPE_KEY]
    assert yaml.safe_load(recipe) == yaml.safe_load(saved)
    assert "LlavaForConditionalGeneration.from_pretrained" in card and "AutoProcessor.from_pretrained" in card


def test_the_exported_folder_answers_in_hugging_face_as_the_readme_shows(run, synthetic_root, tmp_path):
    """The README's export command and its AutoProcessor + LlavaForConditionalGeneration code, run as written
    (transformers, installed: LlavaForConditionalGeneration.generate, greedy), give the answer
    ``tokencompose.ask`` gives for the same picture (a synthetic one, at the encoder's size)."""
    checkpoint = run / "checkpoints" / "tiny_llava15" / "last.ckpt"
    readme = (REPO / "README.md").read_text().split("## Hugging Face LLaVA", 1)[1]
    command = readme.split("```bash\n", 1)[1].split("\n```", 1)[0]
    code = readme.split("```python\n", 1)[1].split("\n```", 1)[0]
    assert command == "uv run tokencompose export --ckpt_path checkpoints/tiny_llava15/last.ckpt --out hf/tiny_llava15"
    state = torch.load(checkpoint, weights_only=True)
    head, eos = state["state_dict"]["llm.model.lm_head.weight"], tokencompose.load(checkpoint).llm.text_tokenizer.eos_token_id
    head[eos] = torch.cat([head[:eos], head[eos + 1:]]).mean(0)  # EOS never greedy: both answers run 8 tokens long
    checkpoint = tmp_path / "checkpoints" / "tiny_llava15" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(state, checkpoint)
    (tmp_path / "photo.png").write_bytes(first_val_sample(synthetic_root)["png"])
    exported = subprocess.run([sys.executable, "-m", "tokencompose", *command.split()[3:]], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "hf" / "tiny_llava15" / "README.md").is_file()
    hugging_face = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert hugging_face.returncode == 0, hugging_face.stderr
    ours = tokencompose.ask(tokencompose.load(checkpoint), tmp_path / "photo.png", "what color is the circle ?",
                            max_new_tokens=8)
    assert hugging_face.stdout.strip() == ours.answer and len(ours.answer.split()) > 1  # a real answer
