import pytest
import torch
from torch.testing import assert_close

from tokencompose.scalers import DatasetStatsScaler, L2NormScaler, MeanStdScaler, NoScaler, masked_moments
from tokencompose.types import TokenStream


def streams(batch: int = 2) -> dict[str, TokenStream]:
    patch = torch.randn(batch, 9, 16) * 3 + 1
    objects = torch.randn(batch, 4, 16) * 0.1 - 5
    valid = torch.tensor([[True, True, False, False]] * batch)
    return {
        "cls": TokenStream(torch.randn(batch, 1, 16) * 10, torch.ones(batch, 1, dtype=torch.bool)),
        "patch": TokenStream(patch, torch.ones(batch, 9, dtype=torch.bool)),
        "objects": TokenStream(objects * valid[..., None], valid),
    }


def test_masked_moments_match_torch():
    tokens = torch.randn(2, 5, 4)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    mean, std = masked_moments(tokens, valid)
    assert_close(mean[1], tokens[1, :2].mean())
    assert_close(std[1], tokens[1, :2].std(unbiased=False))


def test_mean_std_scaler_gives_targets_the_patch_statistics():
    s = streams()
    out = MeanStdScaler()(s)
    ref_mean, ref_std = masked_moments(s["patch"].tokens, s["patch"].valid)
    for name in ("cls", "objects"):
        token = out[name].tokens[:, 0]
        assert_close(token.mean(-1), ref_mean, atol=1e-4, rtol=1e-4)
        assert_close(token.std(-1, unbiased=False), ref_std, atol=1e-3, rtol=1e-3)
    assert out["objects"].tokens[:, 2:].abs().sum() == 0  # invalid slots stay zero
    assert out["patch"] is s["patch"]


def test_per_image_scaling_is_unchanged_by_dropping_other_objects():
    s = streams()
    full = MeanStdScaler()(s)["objects"].tokens
    dropped = dict(s)
    dropped["objects"] = TokenStream(s["objects"].tokens[:, :1], s["objects"].valid[:, :1])
    assert_close(MeanStdScaler()(dropped)["objects"].tokens, full[:, :1])


def test_l2_scaler_matches_mean_patch_norm():
    s = streams()
    out = L2NormScaler(targets=["cls"])(s)
    assert_close(out["cls"].tokens[:, 0].norm(dim=-1), s["patch"].tokens.norm(dim=-1).mean(1))
    assert out["objects"] is s["objects"]


def test_dataset_stats_accumulate_in_training_and_freeze_in_eval():
    scaler = DatasetStatsScaler(targets=["cls", "objects"])
    scaler.train()
    for _ in range(3):
        scaler(streams())
    mean, std = scaler.statistics("patch")
    assert 0.5 < float(mean) < 1.5 and 2.5 < float(std) < 3.5
    scaler.eval()
    before = scaler.state_dict()["stats_patch"].clone()
    scaler(streams())
    assert_close(scaler.state_dict()["stats_patch"], before)
    with pytest.raises(ValueError, match="targets"):
        DatasetStatsScaler()


def test_a_missing_reference_is_a_problem_named_at_build_time(text_tokenizer):
    from tests.conftest import build_mask_llava

    with pytest.raises(ValueError, match=r"model.scaler \(MeanStdScaler\): stream\(s\) \['patches'\] not found"):
        build_mask_llava(text_tokenizer, scaler=MeanStdScaler(reference="patches"))
    build_mask_llava(text_tokenizer, scaler=NoScaler())


def test_dataset_stats_ignore_a_non_finite_batch():
    scaler = DatasetStatsScaler(targets=["cls", "objects"])
    scaler.train()
    scaler(streams())
    before = scaler.state_dict()["stats_patch"].clone()
    poisoned = streams()
    poisoned["patch"].tokens[0, 0, 0] = float("nan")
    scaler(poisoned)
    assert_close(scaler.state_dict()["stats_patch"], before)
