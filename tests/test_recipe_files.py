"""The recipes ship with the package: ``tokencompose recipes list|copy`` (as torchtune's ``tune ls|cp``) and ``demo``
work from any directory, from a source checkout or an installed wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.recipe_utils import REPO
from tokencompose.cli import main

PYTHON = sys.executable


def test_the_installed_script_exits_0_after_a_command_that_returns_a_value(tmp_path):
    """The console script runs ``sys.exit(entry())``: an entry returning the command's value (here the list of
    recipes) printed it and exited 1 after every successful fit, ask or list."""
    script = Path(PYTHON).parent / "tokencompose"
    out = subprocess.run([str(script), "recipes", "list"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[" not in out.stderr


def test_recipes_list_names_every_shipped_recipe_without_loading_torch(tmp_path):
    probe = ("import sys; from tokencompose.cli import main; main(['recipes', 'list']); "
             "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines()[1:-1]}
    shipped = {p.relative_to(REPO / "recipes").with_suffix("").as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert listed == shipped and "tiny/mask_llava" in listed
    assert "HEAVY []" in out.stdout


def test_recipes_copy_takes_name_and_destination_and_keeps_existing_files(tmp_path, capsys):
    main(["recipes", "copy", "tiny/llava15", str(tmp_path)])
    copied = tmp_path / "llava15.yaml"
    assert copied.read_bytes() == (REPO / "recipes/tiny/llava15.yaml").read_bytes()
    main(["recipes", "copy", "tiny/overlays", str(tmp_path / "mine")])  # a folder of recipes
    assert sorted(p.name for p in (tmp_path / "mine" / "overlays").iterdir()) == sorted(
        p.name for p in (REPO / "recipes/tiny/overlays").glob("*.yaml"))
    copied.write_text("# edited\n")
    with pytest.raises(FileExistsError, match="not overwriting .*llava15.yaml .*--overwrite"):
        main(["recipes", "copy", "tiny/llava15", str(tmp_path)])
    assert copied.read_text() == "# edited\n"
    main(["recipes", "copy", "tiny/llava15", str(tmp_path / "renamed.yaml")])
    assert (tmp_path / "renamed.yaml").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="1"):  # the CLI prints a missing name's message, no traceback
        main(["recipes", "copy", "llava15", str(tmp_path)])
    assert re.search("no shipped recipe 'llava15'; did you mean .*tiny/llava15", capsys.readouterr().err)
    with pytest.raises(SystemExit, match="1"):
        main(["recipes", "copy", "../pyproject.toml", str(tmp_path)])  # only what ships, never a path outside it
    assert "no shipped recipe" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("uv") is None, reason="builds the wheel with uv (the project's build front end)")
def test_the_wheel_carries_the_recipes_and_lists_them_from_any_directory(tmp_path):
    build = subprocess.run(["uv", "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("tokencompose-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert "tokencompose/bundled_recipes/tiny/mask_llava.yaml" in names
    assert "tokencompose/bundled_recipes/annotate/tiny.yaml" in names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([PYTHON, "-m", "tokencompose", "recipes", "list"], capture_output=True, text=True,
                         timeout=120, cwd=elsewhere, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert f"recipes in {tmp_path / 'site' / 'tokencompose' / 'bundled_recipes'}" in out.stdout
    assert "tiny/llava15" in out.stdout
