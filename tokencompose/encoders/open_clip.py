"""open_clip ViT image towers."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from einops import rearrange
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.types import EncoderOutput


class OpenCLIPEncoder(VisionEncoder):
    """The image tower of an open_clip ViT behind the ``VisionEncoder`` interface.

    Args:
        model_name: an open_clip architecture name (``ViT-L-14-336``) or one registered with
            ``open_clip.add_model_config``; with ``pretrained`` a tag (``openai``) or a checkpoint file path.
        config: ``open_clip.CLIP`` constructor arguments (``embed_dim``, ``vision_cfg``, ``text_cfg``) for
            random weights; exclusive with ``model_name``.
        select_layer: hidden-state index as in Hugging Face's convention (-1 = last block, -2 = the one
            before); open_clip's block index is ``layers + select_layer``.
        freeze: no gradients, always in eval mode.
    """

    def __init__(
        self,
        *,
        model_name: str | None = None,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        select_layer: int = -2,
        freeze: bool = True,
    ) -> None:
        super().__init__(select_layer=select_layer, freeze=freeze)
        if (model_name is None) == (config is None):
            raise ValueError("OpenCLIPEncoder: give exactly one of `model_name` (real weights) or `config` (random)")
        if model_name is not None:
            clip = open_clip.create_model(model_name, pretrained=pretrained, weights_only=True)
        else:
            clip = open_clip.CLIP(**config)
        self.visual = clip.visual  # the text tower is not needed and is dropped here
        num_layers = len(self.visual.transformer.resblocks)
        if not -num_layers <= select_layer <= -1:
            raise ValueError(f"OpenCLIPEncoder: select_layer={select_layer} must be in [-{num_layers}, -1]")
        self._block_index = num_layers + select_layer
        self.hidden_size = self.visual.transformer.width
        self.embed_dim = self.visual.output_dim
        self.image_size = self.visual.image_size[0]
        self.patch_size = self.visual.patch_size[0]
        self.image_mean = tuple(getattr(self.visual, "image_mean", None) or OPENAI_DATASET_MEAN)
        self.image_std = tuple(getattr(self.visual, "image_std", None) or OPENAI_DATASET_STD)
        self._apply_freeze()

    def forward(self, pixels: Tensor) -> EncoderOutput:
        """(B, 3, S, S) -> EncoderOutput(cls (B, Dv), patches (B, h, w, Dv), embedding (B, De))."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.visual.forward_intermediates(pixels, indices=[self._block_index], output_extra_tokens=True)
        patches = rearrange(out["image_intermediates"][0], "b d h w -> b h w d")
        cls = out["image_intermediates_prefix"][0][:, 0]  # (B, Dv)
        return EncoderOutput(cls=cls, patches=patches, embedding=out["image_features"])
