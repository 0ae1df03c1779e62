"""The explorer's model side, without a browser: a checkpoint at any budget answers as ``tokencompose.load`` +
``tokencompose.ask`` do (no second model path), its cost falls with the budget, and it shows what it keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tokencompose
from tests.conftest import build_mask_llava
from tests.explore.checkpoints import save_untrained
from tests.recipe_utils import REPO
from tokencompose.explore import session as session_module
from tokencompose.explore.overlays import PALETTE
from tokencompose.explore.session import ModelUnavailable, Session, synthetic_examples
from tokencompose.explore.views import answer_markdown, look, shows, tokens_markdown
from tokencompose.masks.annotator import ObjectAnnotator
from tokencompose.masks.mask_inversion import MaskInversionSettings
from tokencompose.masks.proposer import MaskProposer
from tokencompose.types import ObjectMasks

KEEP = "model.tokenizers.patch.keep"


@pytest.fixture(scope="module")
def fastervlm(tmp_path_factory):
    return save_untrained(REPO / "recipes/tiny/fastervlm.yaml", tmp_path_factory.mktemp("fastervlm") / "last.ckpt")


@pytest.fixture(scope="module")
def picture():
    return synthetic_examples(1)[0]


def test_a_budget_is_the_checkpoint_reloaded_with_the_override_and_answers_as_ask(fastervlm, picture):
    image, question = picture
    session = Session.open(fastervlm)
    (knob,) = session.knobs
    assert knob.key == KEEP and knob.value == 16
    assert session.shows == {"objects": False, "object_map": False, "kept_patches": True}
    for settings in ({}, {KEEP: 4}):
        seen = session.look(image, question, settings)
        direct = tokencompose.ask(tokencompose.load(fastervlm, settings), image, question)
        assert seen.answer.answer == direct.answer and seen.answer.streams == direct.streams
    small, full = session.look(image, question, {KEEP: 4}), session.look(image, question, {})
    assert small.answer.visual_tokens == 4 and full.answer.visual_tokens == 16
    assert small.prefill_gflops < full.prefill_gflops and small.ttft_ms > 0
    kept = small.kept_patches["patch"]  # 8x8 patches of 8 px: 4 as they are, 60 dimmed
    cells = (kept.reshape(8, 8, 8, 8, 3) == small.image.reshape(8, 8, 8, 8, 3)).all(axis=(1, 3, 4))  # (8, 8)
    assert cells.sum() == 4
    assert "4 visual tokens" in tokens_markdown(small) and "prefill" in answer_markdown(small)


def test_a_sweep_answers_at_evenly_spaced_budgets_largest_first(fastervlm, picture, monkeypatch):
    monkeypatch.setattr(session_module, "SWEEP_POINTS", 3)  # of keep 1..8, 16, 32, 64: both ends and the middle
    session = Session.open(fastervlm)
    rows = session.sweep(*picture, {}, KEEP)
    assert [row["visual tokens"] for row in rows] == [64, 6, 1]
    assert all(row["visual tokens"] == row["patch: FasterVLM kept patches"] for row in rows)
    with pytest.raises(ValueError, match="no budget knob 'model.tokenizers.objects.max_objects'"):
        session.sweep(*picture, {}, "model.tokenizers.objects.max_objects")


def test_opening_says_plainly_what_it_cannot_do(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        Session.open(tmp_path / "none.ckpt")
    stored = save_untrained(REPO / "recipes/tiny/mask_llava.yaml", tmp_path / "mask_llava.ckpt")
    with pytest.raises(ModelUnavailable, match="reads the object masks stored with its data"):
        Session.open(stored)


class TwoMasks(MaskProposer):
    """Two fixed masks: the left half (score 0.5) and the top-right quarter (score 0.9)."""

    def propose(self, images, given):
        size = images.shape[-1]
        masks = torch.zeros(images.shape[0], 2, size, size, dtype=torch.bool)
        masks[:, 0, :, : size // 2] = True
        masks[:, 1, : size // 2, size // 2 :] = True
        scores = torch.tensor([[0.5, 0.9]]).expand(images.shape[0], -1)
        return ObjectMasks(masks, scores, torch.ones(images.shape[0], 2, dtype=torch.bool))


def test_objects_are_shown_best_first_with_scores_and_the_chosen_objects_map(text_tokenizer, picture):
    source = ObjectAnnotator(proposer=TwoMasks(), inversion=MaskInversionSettings(iterations=2))
    model = build_mask_llava(text_tokenizer, object_source=source)
    assert shows(model) == {"objects": True, "object_map": True, "kept_patches": False}
    best, second = look(model, *picture, chosen_object=0), look(model, *picture, chosen_object=1)
    assert best.object_scores == [0.9, 0.5] and best.proposed_objects == 2  # ranked by score, as the tokenizer
    assert best.answer.streams["objects"].tokens == 2
    tinted = best.objects[0, 63].astype(int) - best.image[0, 63].astype(int)  # top right: object #0, PALETTE[0]
    assert np.sign(tinted).tolist() == np.sign(PALETTE[0].astype(int) - best.image[0, 63]).tolist()
    assert (best.objects[63, 40] == best.image[63, 40]).all()  # bottom right: no object
    assert best.object_map.shape == best.image.shape and not np.array_equal(best.object_map, second.object_map)
    assert "Objects kept: 2 of 2 proposed (scores: #0 0.90, #1 0.50); map of #1" in answer_markdown(second)


def test_a_recipe_whose_weights_are_not_here_is_refused_saying_so(fastervlm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the download: nothing is fetched
    with pytest.raises(ModelUnavailable, match="its recipe needs weights that are not here"):
        Session.open(fastervlm, ["--config", str(REPO / "recipes/llava15_stage2.yaml")])
