"""Matrix-product FLOPs of MaskInversion's two forms, counted from the encoder's shape: the ideal speed-up of the
fast form over the direct one is their ratio.

Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them: 2 m n k per matrix product (linear layers,
attention products, the patch convolution); element-wise work (norms, GELU, softmax, Dice, resizing, AdamW) is
not counted. Symbols: C the width, Dm the MLP width, De the embedding width, N blocks, T = 1 + h*w tokens,
K masks, S optimiser steps; one block forward is ``8 T C^2 + 4 T C Dm + 4 T^2 C``.

- direct (``mask_inversion_direct``): the image copied K times through the encoder (K forwards and the final
  projection), then per mask and step: the score's embedding (``2 C De``), the LeGrad VJP through the last
  block over all T tokens with ``create_graph`` (``2 C De + 4 T C Dm + 2 T C^2 + 2 T^2 C``) and the double
  backward of the loss — the adjoint of that VJP, plus the backward of the traced block itself, since the
  block's input is a leaf that requires grad (``4 C De + 8 T C Dm + 10 T C^2 + 12 T^2 C`` in all). Per mask-step:
  ``8 C De + 12 T C Dm + 12 T C^2 + 14 T^2 C``.
- fast (``mask_inversion_fast``): one encoder forward per image, the VJP closure's forward (mean taken before
  the MLP's last linear layer) and the image embedding; per mask and step the VJP (``2 C De + 2 Dm C +
  2 T C Dm + 2 T C^2 + 2 T^2 C``) and its adjoint (the same again). Per mask-step:
  ``4 C De + 4 Dm C + 4 T C Dm + 4 T C^2 + 4 T^2 C``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tokencompose.masks.mask_inversion import MaskInversionSettings


@dataclass(frozen=True)
class ViTShape:
    """A CLIP ViT's widths and the patch grid of the input: width C, mlp_width Dm, embed_dim De, layers N,
    patch size p, grid (h, w), 3 input channels."""

    width: int
    mlp_width: int
    embed_dim: int
    layers: int
    patch_size: int
    grid: tuple[int, int]

    @classmethod
    def from_open_clip(cls, embed_dim: int, vision_cfg: dict[str, Any], image_size: int | None = None) -> ViTShape:
        """From an ``open_clip.CLIP`` config (``embed_dim``, ``vision_cfg``) at ``image_size`` (default: its own)."""
        side = (image_size or vision_cfg["image_size"]) // vision_cfg["patch_size"]
        width = vision_cfg["width"]
        return cls(width=width, mlp_width=int(width * vision_cfg.get("mlp_ratio", 4.0)), embed_dim=embed_dim,
                   layers=vision_cfg["layers"], patch_size=vision_cfg["patch_size"], grid=(side, side))

    @property
    def tokens(self) -> int:
        return 1 + self.grid[0] * self.grid[1]

    def encoder_forward(self) -> int:
        """One image through patch convolution, N blocks and the final projection of the class token."""
        t, c = self.tokens, self.width
        patches = 2 * self.grid[0] * self.grid[1] * 3 * self.patch_size**2 * c
        block = 8 * t * c * c + 4 * t * c * self.mlp_width + 4 * t * t * c
        return patches + self.layers * block + 2 * c * self.embed_dim


def mask_inversion_flops(
    shape: ViTShape, masks: int, settings: MaskInversionSettings, form: Literal["direct", "fast"]
) -> int:
    """Matrix-product FLOPs of one image's MaskInversion with ``masks`` masks (LeGrad on the last block)."""
    if settings.num_layers != 1:
        raise ValueError(f"mask_inversion_flops: settings.num_layers={settings.num_layers}; only 1 (the default) is counted")
    if form not in ("direct", "fast"):
        raise ValueError(f"mask_inversion_flops: form={form!r}; allowed: 'direct', 'fast'")
    t, c, dm, de = shape.tokens, shape.width, shape.mlp_width, shape.embed_dim
    steps = masks * settings.iterations
    if form == "direct":
        per_step = 8 * c * de + 12 * t * c * dm + 12 * t * c * c + 14 * t * t * c
        return masks * shape.encoder_forward() + steps * per_step
    setup = shape.encoder_forward() + 2 * t * c * c + 2 * t * c * dm + 2 * dm * c + 2 * c * de
    per_step = 4 * c * de + 4 * dm * c + 4 * t * c * dm + 4 * t * c * c + 4 * t * t * c
    return setup + steps * per_step


def ideal_speedup(shape: ViTShape, masks: int, settings: MaskInversionSettings) -> float:
    """FLOPs(direct) / FLOPs(fast): the speed-up the fast form reaches when both run at the same FLOP rate."""
    return mask_inversion_flops(shape, masks, settings, "direct") / mask_inversion_flops(shape, masks, settings, "fast")
