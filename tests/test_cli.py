"""The command line as a user meets it: every command listed, help without loading torch, one grammar."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.recipe_utils import REPO, small_data
from tokencompose.cli import GROUPS, LIGHTNING_COMMANDS, TOOLS, main, split_recipe_args

PYTHON = sys.executable


def run(*code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *code], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_help_lists_every_command_without_importing_torch():
    probe = ("import sys; from tokencompose.cli import main; main(['--help']); "
             "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = run("-c", probe)
    assert out.returncode == 0, out.stderr
    for command in [*LIGHTNING_COMMANDS, *TOOLS]:
        assert f"\n  {command} " in out.stdout
    for group, tools in GROUPS.items():
        for command in tools:
            assert f"{group} {command}" in out.stdout
    assert "HEAVY []" in out.stdout


@pytest.mark.parametrize("argv", [["eval", "--help"], ["sweep", "--help"], ["data", "convert-llava", "--help"],
                                  ["data", "convert-benchmark", "--help"], ["demo", "--help"], ["fitprune", "--help"],
                                  ["ask", "--help"], ["export", "--help"], ["recipes", "list", "--help"],
                                  ["recipes", "copy", "--help"], ["explore", "--help"]])
def test_tool_help_comes_from_the_signature_and_loads_no_torch(argv):
    probe = (f"import sys; from tokencompose.cli import main\ntry: main({argv!r})\nexcept SystemExit: pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = run("-c", probe)
    assert out.returncode == 0, out.stderr
    assert f"usage: tokencompose {' '.join(argv[:-1])}" in out.stdout and "HEAVY []" in out.stdout
    if argv[0] in ("eval", "sweep"):
        assert "--ckpt_path" in out.stdout and "--benchmark" in out.stdout and "--config RECIPE" in out.stdout


def test_version_and_python_dash_m():
    assert run("-m", "tokencompose", "--version").stdout.startswith("tokencompose ")
    listed = run("-m", "tokencompose", "--help")
    assert listed.returncode == 0 and "eval" in listed.stdout


def test_an_unknown_command_or_option_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate"])
    assert "unknown command 'evaluate'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "convert-llava", "--json", "x.json", "--images", "i", "--out", "o", "--shard-mb", "3"])
    assert "shard-mb" in capsys.readouterr().err  # underscores, as every other option: --shard_mb


def test_recipe_arguments_are_split_from_the_tool_options():
    recipe, own = split_recipe_args(["--config", "a.yaml", "--benchmark", "pope=x", "--model.max_length", "64",
                                     "--trainer.devices=1", "--out", "o", "--config", "b.yaml"])
    assert recipe == ["--config", "a.yaml", "--model.max_length", "64", "--trainer.devices=1", "--config", "b.yaml"]
    assert own == ["--benchmark", "pope=x", "--out", "o"]


def test_a_bad_recipe_override_fails_before_anything_is_predicted(synthetic_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--config", str(REPO / "recipes/tiny/mask_llava.yaml"), "--benchmark",
              f"shapes={synthetic_root}/val-000000.tar", "--out", str(tmp_path), "--model.tokenizers.patch.gird", "2",
              *small_data(synthetic_root)])
    assert "gird" in capsys.readouterr().err
    assert not (tmp_path / "shapes_predictions.jsonl").exists()


def test_lightning_test_command_runs_a_test_step(synthetic_root):
    cli = main(["test", "--config", str(REPO / "recipes/tiny/llava15.yaml"), "--trainer.limit_test_batches", "1",
                *small_data(synthetic_root)])
    assert "test/accuracy" in cli.trainer.callback_metrics and "test/loss" in cli.trainer.callback_metrics


def test_sweep_takes_several_benchmarks_like_eval(synthetic_root, tmp_path):
    from tests.eval.test_robustness import pope_record, raw_sample
    from tokencompose.data import write_shard

    pope = tmp_path / "pope.tar"
    write_shard(pope, [raw_sample(f"p{i}", pope_record(f"p{i}", "yes" if i % 2 else "no"), i) for i in range(4)])
    rows = main(["sweep", "--config", str(REPO / "recipes/tiny/llava15.yaml"), "--benchmark",
                 f"shapes={synthetic_root}/val-000000.tar", "--benchmark", f"pope={pope}",
                 "--grid", "model.tokenizers.patch.grid=2,1", "--out", str(tmp_path / "sweep"), *small_data(synthetic_root)])
    assert len(rows) == 2 and all("shapes/score" in r and "pope/accuracy" in r for r in rows)
    assert [r["visual_token_slots"] for r in rows] == [4, 1]


@pytest.mark.parametrize("argv", [["ask", "--ckpt_path", "missing.ckpt", "--image", "x.jpg", "--question", "q"],
                                  ["plan", "--config", "missing.yaml"], ["recipes", "copy", "no_such_recipe", "out"]])
def test_a_missing_path_ends_the_command_with_its_message_not_a_traceback(argv, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tokencompose", *argv], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stderr.startswith("tokencompose: ")
    assert argv[2] in out.stderr  # the path the user gave is named
