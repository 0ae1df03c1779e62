"""Building Segment Anything models: a published variant with a checkpoint, or a tiny random one for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from tokencompose.hub import SAM_CHECKPOINT_URLS, WeightsUnavailable, unavailable_as_error
from tokencompose.model_configs import in_meta_build


def _load_checkpoint(variant: str, checkpoint: str) -> dict[str, torch.Tensor]:
    """The state dict of a SAM release file (``weights_only=True``), or ``WeightsUnavailable`` naming the file
    and the release URL it comes from."""
    url = SAM_CHECKPOINT_URLS.get(variant)
    fetch = (f"mkdir -p {Path(checkpoint).parent} && wget -O {checkpoint} {url}" if url
             else "the Segment Anything release (github.com/facebookresearch/segment-anything#model-checkpoints)")
    if not Path(checkpoint).is_file():
        raise WeightsUnavailable("SAM", checkpoint, f"no such file (the {variant} checkpoint of the SAM release)", fetch,
                                 hub=False)
    with unavailable_as_error("SAM", checkpoint, fetch, hub=False):
        return torch.load(checkpoint, map_location="cpu", weights_only=True)


def build_sam(variant: str | None = None, checkpoint: str | None = None, config: dict[str, Any] | None = None) -> Sam:
    """SAM from ``variant`` ('vit_h', 'vit_l', 'vit_b') and an optional checkpoint file (loaded with
    ``weights_only=True``), or from a tiny ``config`` (image_size, patch_size, width, depth, heads, prompt_dim).
    Inside ``model_configs.meta_build()`` no checkpoint is read (the registry's architecture, on the meta device)."""
    if (variant is None) == (config is None):
        raise ValueError("build_sam: give exactly one of `variant` (published architecture) or `config` (tiny)")
    if variant is not None:
        if variant not in sam_model_registry:
            raise ValueError(f"build_sam: variant={variant!r}; allowed: {sorted(sam_model_registry)}")
        reads = checkpoint is not None and not in_meta_build()
        state = _load_checkpoint(variant, checkpoint) if reads else None  # before building ViT-H
        sam = sam_model_registry[variant](checkpoint=None)
        if state is not None:
            sam.load_state_dict(state)
        return sam.eval()
    size, patch, prompt = config["image_size"], config["patch_size"], config["prompt_dim"]
    grid = size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=config["width"], depth=config["depth"],
            num_heads=config["heads"], out_chans=prompt,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt, mlp_dim=2 * prompt, num_heads=2),
            transformer_dim=prompt, iou_head_depth=2, iou_head_hidden_dim=prompt,
        ),
    ).eval()
