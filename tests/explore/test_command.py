"""``tokencompose explore`` as a user meets it: fast help without torch or Gradio, and a plain way to install it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.recipe_utils import REPO
from tokencompose.cli import main


def test_explore_help_loads_neither_torch_nor_gradio():
    probe = ("import sys; from tokencompose.cli import main\ntry: main(['explore', '--help'])\nexcept SystemExit: pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'gradio', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "usage: tokencompose explore" in out.stdout and "--ckpt_path" in out.stdout
    assert "--compare_ckpt_path" in out.stdout and "HEAVY []" in out.stdout


def test_without_the_app_extra_it_says_how_to_install_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    with pytest.raises(SystemExit, match=r"needs the `app` extra .*uv sync --extra app.*tokencompose\[app\]"):
        main(["explore", "--ckpt_path", str(tmp_path / "last.ckpt")])


def test_a_checkpoint_it_cannot_open_is_named(tmp_path):
    pytest.importorskip("gradio", reason="the `app` extra is not installed")
    with pytest.raises(SystemExit, match="tokencompose explore: --ckpt_path: checkpoint .*none.ckpt.* does not exist"):
        main(["explore", "--ckpt_path", str(tmp_path / "none.ckpt")])
