import json

import open_clip
import pytest
import torch
from torch.testing import assert_close

from tests.conftest import TINY_HF_CLIP, TINY_OPEN_CLIP
from tokencompose.encoders import HFCLIPEncoder, OpenCLIPEncoder


def test_hf_encoder_shapes_and_selected_layer(hf_encoder):
    pixels = torch.randn(2, 3, 64, 64)
    out = hf_encoder(pixels)
    assert out.cls.shape == (2, 64) and out.patches.shape == (2, 8, 8, 64) and out.embedding.shape == (2, 32)
    hidden = hf_encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert_close(out.patches.flatten(1, 2), hidden[:, 1:])
    assert_close(out.cls, hidden[:, 0])
    assert not any(p.requires_grad for p in hf_encoder.parameters())
    hf_encoder.train()
    assert not hf_encoder.training  # a frozen encoder stays in eval mode


def test_hf_encoder_trainable_and_without_projection():
    encoder = HFCLIPEncoder(config=TINY_HF_CLIP, with_projection=False, freeze=False, select_layer=-1)
    out = encoder(torch.randn(1, 3, 64, 64))
    assert encoder.embed_dim == 64 and out.embedding.shape == (1, 64)
    out.patches.sum().backward()
    assert any(p.grad is not None for p in encoder.parameters())


def test_hf_encoder_loads_saved_checkpoint(tmp_path, hf_encoder):
    hf_encoder.model.save_pretrained(tmp_path)
    loaded = HFCLIPEncoder(name_or_path=str(tmp_path))
    pixels = torch.randn(1, 3, 64, 64)
    assert_close(loaded(pixels).patches, hf_encoder(pixels).patches)
    with pytest.raises(ValueError, match="exactly one"):
        HFCLIPEncoder()


def test_open_clip_encoder_shapes_and_layer(open_clip_encoder):
    pixels = torch.randn(2, 3, 64, 64)
    out = open_clip_encoder(pixels)
    assert out.cls.shape == (2, 64) and out.patches.shape == (2, 8, 8, 64) and out.embedding.shape == (2, 32)
    assert_close(out.embedding, open_clip_encoder.visual(pixels))
    last = OpenCLIPEncoder(config=TINY_OPEN_CLIP, select_layer=-1)
    last.visual.load_state_dict(open_clip_encoder.visual.state_dict())
    assert not torch.allclose(last(pixels).patches, out.patches)  # a different layer gives different tokens
    with pytest.raises(ValueError, match="select_layer"):
        OpenCLIPEncoder(config=TINY_OPEN_CLIP, select_layer=-3)


def test_open_clip_encoder_loads_named_model_from_checkpoint_file(tmp_path):
    """The real-weight path: a registered architecture name plus a checkpoint file, through open_clip's loader."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "tc-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config_dir)
    clip = open_clip.CLIP(**TINY_OPEN_CLIP)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), checkpoint)
    encoder = OpenCLIPEncoder(model_name="tc-tiny-vit", pretrained=str(checkpoint))
    pixels = torch.randn(1, 3, 64, 64)
    assert_close(encoder(pixels).embedding, clip.visual(pixels))
