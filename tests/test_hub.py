"""Pretrained weights that cannot be loaded: an error at once, naming the recipe key and how to fetch them.

What is avoided is re-derived from huggingface_hub 2.4 (installed), ``utils/_http.py`` ``_http_backoff_base``:
a connection error is retried ``max_retries=5`` times with waits 1, 2, 4, 8, 8 s for each file ``from_pretrained``
asks for. No test here reaches a network: an empty cache, ``HF_HUB_OFFLINE=1`` or an endpoint on a closed local port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.recipe_utils import REPO, small_data
from tokencompose.hub import WeightsUnavailable


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty hub cache and an endpoint nobody listens on: any network attempt fails at once (refused)."""
    from huggingface_hub import constants

    with socket.socket() as probe:  # a port that was free a moment ago: connecting to it is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return port


def test_a_missing_local_folder_fails_at_once_naming_it(tmp_path, no_hub):
    from tokencompose.encoders import HFCLIPEncoder

    missing = str(tmp_path / "clip" / "nowhere")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable, match="no such local file or folder") as caught:
        HFCLIPEncoder(name_or_path=missing)
    assert time.perf_counter() - start < 5
    assert caught.value.name == missing and caught.value.component == "HFCLIPEncoder"


def test_an_unreachable_hub_fails_at_once_without_retries(no_hub, text_tokenizer):
    from tokencompose.llm import CausalLM, load_text_tokenizer

    for build in (lambda: CausalLM(text_tokenizer=text_tokenizer, name_or_path="someone/no-such-llm"),
                  lambda: load_text_tokenizer("someone/no-such-llm")):
        start = time.perf_counter()
        with pytest.raises(WeightsUnavailable) as caught:
            build()
        assert time.perf_counter() - start < 5  # huggingface_hub's own retries alone wait 23 s per file
        message = str(caught.value)
        assert "cannot be reached" in message and f"127.0.0.1:{no_hub}" in message
        assert "hf download someone/no-such-llm" in message and "HF_HUB_OFFLINE=1" in message


def test_offline_errors_name_the_recipe_key(monkeypatch, tmp_path, no_hub):
    from huggingface_hub import constants

    from tokencompose.recipes import load_recipe

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tokenizer = "{class_path: tokencompose.llm.load_text_tokenizer, init_args: {name_or_path: someone/no-such-tok}}"
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as caught:
        load_recipe([REPO / "recipes/tiny/llava15.yaml"], {"model.llm.init_args.text_tokenizer": tokenizer})
    assert time.perf_counter() - start < 30
    assert caught.value.keys == ("model.llm.text_tokenizer.name_or_path",)
    assert str(caught.value).startswith("model.llm.text_tokenizer.name_or_path = 'someone/no-such-tok': load_text_tokenizer")
    assert "HF_HUB_OFFLINE is set" in str(caught.value)


def test_a_missing_sam_checkpoint_names_the_key_and_the_release_file(tmp_path, synthetic_root):
    from tokencompose.recipes import AnnotateCLI

    checkpoint = tmp_path / "checkpoints" / "sam_vit_b.pth"
    overlay = tmp_path / "real_sam.yaml"
    overlay.write_text("model:\n  annotator:\n    init_args:\n      proposer:\n        init_args:\n"
                       f"          sam_config: null\n          sam_variant: vit_b\n          sam_checkpoint: {checkpoint}\n")
    with pytest.raises(WeightsUnavailable) as caught:
        AnnotateCLI(args=["--config", str(REPO / "recipes/annotate/tiny.yaml"), "--config", str(overlay)])
    assert caught.value.keys == ("model.annotator.proposer.sam_checkpoint",)
    message = str(caught.value)
    assert f"wget -O {checkpoint} https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message
    assert "HF_HUB_OFFLINE" not in message  # not a hub file


def test_the_command_line_says_what_to_fetch_without_a_traceback(tmp_path, synthetic_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}  # an empty cache
    args = ["fit", "--config", str(REPO / "recipes/tiny/llava15.yaml"), "--model.encoder.init_args.config", "null",
            "--model.encoder.init_args.name_or_path", "openai/clip-vit-large-patch14-336", *small_data(synthetic_root)]
    out = subprocess.run([sys.executable, "-m", "tokencompose", *args], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert out.returncode == 1, out.stderr
    assert "model.encoder.name_or_path = 'openai/clip-vit-large-patch14-336': HFCLIPEncoder" in out.stderr
    assert "hf download openai/clip-vit-large-patch14-336" in out.stderr and "Traceback" not in out.stderr
