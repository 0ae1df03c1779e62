import pytest
import torch

from tests.recipe_utils import (
    ANNOTATE_RECIPES,
    OVERLAYS,
    RECIPES,
    TINY_RECIPES,
    ParseOnlyAnnotateCLI,
    ParseOnlyCLI,
    overlay_base,
    small_data,
)
from tokencompose.recipes import TokenComposeCLI


def test_recipes_exist():
    names = {str(r.relative_to(r.parents[1] if "tiny" in r.parts else r.parent)) for r in RECIPES}
    for stage in ("llava15_stage1", "llava15_stage2", "mask_llava_stage1", "mask_llava_stage2"):
        assert f"{stage}.yaml" in {r.name for r in RECIPES if "tiny" not in r.parts}
        assert f"tiny/{stage}.yaml" in names
    assert {"tiny/llava15.yaml", "tiny/mask_llava.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_recipe_parses_and_documents_itself(recipe):
    header = recipe.read_text().splitlines()
    assert header[0].startswith("# ") and any("tokencompose fit --config" in line for line in header[:12])
    cli = ParseOnlyCLI(args=["--config", str(recipe)], run=False)
    assert cli.config["model"]["tokenizers"]


def stage1_checkpoint(stage2_recipe, root, tmp_path):
    """Train the matching stage-1 recipe for one step and save its checkpoint."""
    stage1 = stage2_recipe.with_name(stage2_recipe.name.replace("stage2", "stage1"))
    cli = TokenComposeCLI(args=["--config", str(stage1), "--trainer.max_steps", "1", *small_data(root)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    path = tmp_path / "stage1.ckpt"
    cli.trainer.save_checkpoint(path)
    return path, cli.model


@pytest.mark.parametrize("recipe", TINY_RECIPES, ids=lambda p: p.name)
def test_every_tiny_recipe_runs_fast_dev_run(recipe, synthetic_root, tmp_path):
    extra = []
    if recipe.name.endswith("stage2.yaml"):
        checkpoint, stage1_model = stage1_checkpoint(recipe, synthetic_root, tmp_path)
        extra = ["--model.init_weights", str(checkpoint)]
    args = ["--config", str(recipe), "--trainer.fast_dev_run", "true", *small_data(synthetic_root), *extra]
    cli = TokenComposeCLI(args=args, run=False)
    if extra:  # stage 2 starts from stage 1's trained projector
        assert torch.equal(cli.model.projectors["shared"].layers[0].weight, stage1_model.projectors["shared"].layers[0].weight)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def test_missing_init_weights_names_the_key(synthetic_root):
    from tests.recipe_utils import REPO

    recipe = REPO / "recipes" / "tiny" / "mask_llava_stage2.yaml"
    with pytest.raises(FileNotFoundError, match="init_weights"):
        TokenComposeCLI(args=["--config", str(recipe), "--model.init_weights", "nope.ckpt", *small_data(synthetic_root)], run=False)


@pytest.mark.parametrize("recipe", ANNOTATE_RECIPES, ids=lambda p: p.name)
def test_every_annotate_recipe_parses_and_documents_itself(recipe):
    header = recipe.read_text().splitlines()
    assert header[0].startswith("# ") and any("tokencompose annotate --config" in line for line in header[:12])
    cli = ParseOnlyAnnotateCLI(args=["--config", str(recipe)])
    assert cli.config["model"]["annotator"]


def run_cli_expecting_error(args, capsys) -> str:
    with pytest.raises(SystemExit):
        ParseOnlyCLI(args=args, run=False)
    return capsys.readouterr().err


def test_unknown_key_is_named(capsys, tiny_mask_llava):
    err = run_cli_expecting_error(["--config", str(tiny_mask_llava), "--model.tokenizers.patch.gird", "2"], capsys)
    assert "gird" in err


def test_wrong_class_for_a_slot_is_named(capsys, tmp_path, tiny_mask_llava):
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_mask_llava.read_text().replace("tokencompose.encoders.HFCLIPEncoder", "tokencompose.tokenizers.GlobalTokenizer", 1))
    err = run_cli_expecting_error(["--config", str(bad)], capsys)
    assert "model.encoder" in err or "encoder" in err


def test_width_mismatch_fails_at_build_time_naming_the_key(synthetic_root, tiny_mask_llava):
    with pytest.raises(ValueError, match="shared_projector"):
        TokenComposeCLI(
            args=["--config", str(tiny_mask_llava), "--model.tokenizers.cls.source", "embedding", *small_data(synthetic_root)],
            run=False,
        )


def test_budget_override_from_the_command_line(synthetic_root, tiny_mask_llava):
    cli = TokenComposeCLI(
        args=["--config", str(tiny_mask_llava), "--model.tokenizers.patch.grid", "1",
              "--model.tokenizers.objects.max_objects", "2", *small_data(synthetic_root)],
        run=False,
    )
    assert cli.model.visual_tokens_per_image() == {"cls": 1, "patch": 1, "objects": 2}


def test_overlay_composition_rules(synthetic_root, tmp_path, tiny_mask_llava):
    """Later --config files win key by key; a mapping value such as model.tokenizers is replaced whole."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("model:\n  tokenizers:\n    patch:\n      init_args: {grid: 3}\n  max_new_tokens: 2\n")
    args = ["--config", str(tiny_mask_llava), "--config", str(overlay), *small_data(synthetic_root)]
    with pytest.raises(ValueError, match="objects"):  # the scaler's reference/targets no longer exist
        TokenComposeCLI(args=[*args, "--model.scaler", "tokencompose.scalers.MeanStdScaler",
                              "--model.scaler.targets", "[objects]"], run=False)
    cli = TokenComposeCLI(args=[*args, "--model.scaler", "null"], run=False)
    assert list(cli.model.tokenizers) == ["patch"] and cli.model.tokenizers["patch"].grid == 3
    assert cli.model.max_new_tokens == 2 and cli.model.max_length == 128  # other keys: overlay wins, rest kept


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_overlay_composes_with_its_base_and_runs(overlay, synthetic_root):
    header = overlay.read_text().splitlines()
    assert any("tokencompose fit --config" in line and str(overlay.name) in line for line in header)
    args = ["--config", str(overlay_base(overlay)), "--config", str(overlay), "--trainer.fast_dev_run", "true"]
    cli = TokenComposeCLI(args=[*args, *small_data(synthetic_root)], run=False)
    base = ParseOnlyCLI(args=["--config", str(overlay_base(overlay))], run=False).config
    assert cli.config["model"] != base["model"]  # the overlay changed the model
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1


@pytest.fixture
def tiny_mask_llava():
    from tests.recipe_utils import REPO

    return REPO / "recipes" / "tiny" / "mask_llava.yaml"


@pytest.mark.parametrize("recipe", TINY_RECIPES, ids=lambda p: p.name)
def test_kv_cache_on_and_off_give_the_same_greedy_answers_for_every_scheme(recipe, synthetic_root):
    from tokencompose.data import ShardDataModule

    cli = TokenComposeCLI(args=["--config", str(recipe), *small_data(synthetic_root), "--model.init_weights", "null"], run=False)
    model = cli.model.eval()
    data = ShardDataModule(val=str(synthetic_root / "val-000000.tar"), batch_size=4)
    data.transform = model.data_transform()
    batch = next(iter(data.val_dataloader()))
    with torch.enable_grad() if model.needs_autograd else torch.no_grad():
        assert model.generate(batch, max_new_tokens=4, use_cache=True) == model.generate(batch, max_new_tokens=4, use_cache=False)
