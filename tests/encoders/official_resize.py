"""The official way to run a CLIP ViT at another input size, rebuilt from the library's own parts (test helper).

WalBouss/LeGrad ``legrad/utils.py`` (``vit_dynamic_size_forward``, commit c5c7b20d3bfc20169471f4a123abd0636c6a16e1;
enabled by ``legrad/wrapper.py`` ``LeWrapper._activate_hooks``, commit 8c2ca901a0dd185fba22314c32fa7857e24c5425,
and so by WalBouss/MaskInversion ``maskinversion/maskinversion.py``, commit 6257297ae457a7ceeb0280214df4073fbf0a0b77)
sets ``visual.positional_embedding.data`` to timm's ``resample_abs_pos_embed(table[None], new_size=[H/p, W/p],
num_prefix_tokens=1, interpolation='bicubic', antialias=True)`` and then runs the model's ordinary forward. Here
that is a model *built* at the new size holding the same weights and timm's table, run by the library itself
(timm 1.0.31 ``timm/layers/pos_embed.py`` is installed and is called as the reference).
"""

from __future__ import annotations

from typing import Any

from timm.layers import resample_abs_pos_embed
from torch import Tensor

from tests.conftest import TINY_HF_CLIP, TINY_OPEN_CLIP
from tokencompose.encoders import HFCLIPEncoder, OpenCLIPEncoder, VisionEncoder


def timm_table(table: Tensor, grid: tuple[int, int], antialias: bool = True) -> Tensor:
    """(1 + h*w, C) -> (1 + h'*w', C) through timm, as the official code calls it (``antialias=False``: plain)."""
    return resample_abs_pos_embed(
        table[None], new_size=list(grid), num_prefix_tokens=1, interpolation="bicubic", antialias=antialias
    )[0]


def checkpoint_table(encoder: VisionEncoder) -> Tensor:
    """The (1 + h*w, C) positional table the encoder's weights hold."""
    if isinstance(encoder, OpenCLIPEncoder):
        return encoder.visual.positional_embedding
    return encoder._vision.embeddings.position_embedding.weight


def built_at(encoder: VisionEncoder, size: tuple[int, int], antialias: bool = True) -> VisionEncoder:
    """A copy of a tiny encoder built for ``size`` (H, W), its positional table replaced by timm's resampling.

    HF CLIP configs are square only, so an HF copy needs H == W; open_clip takes (H, W).
    """
    grid = (size[0] // encoder.patch_size, size[1] // encoder.patch_size)
    table = timm_table(checkpoint_table(encoder).detach(), grid, antialias)
    if isinstance(encoder, OpenCLIPEncoder):
        config: dict[str, Any] = {**TINY_OPEN_CLIP, "vision_cfg": {**TINY_OPEN_CLIP["vision_cfg"], "image_size": size}}
        copy = OpenCLIPEncoder(config=config, select_layer=encoder.select_layer)
        copy.visual.load_state_dict({**encoder.visual.state_dict(), "positional_embedding": table})
        return copy
    if size[0] != size[1]:
        raise ValueError(f"built_at: HF CLIP configs are square, got {size}")
    copy = HFCLIPEncoder(config={**TINY_HF_CLIP, "image_size": size[0]}, select_layer=encoder.select_layer)
    key = next(name for name, param in copy.model.named_parameters() if param is checkpoint_table(copy))
    copy.model.load_state_dict({**encoder.model.state_dict(), key: table})
    return copy
