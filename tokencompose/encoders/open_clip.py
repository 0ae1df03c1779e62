"""open_clip ViT image towers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch
from einops import rearrange
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import Tensor, nn
from torch.nn import functional as F

from tokencompose.encoders.base import VisionEncoder
from tokencompose.encoders.positions import resample_grid_positions
from tokencompose.hub import WeightsUnavailable, check_access, hub_fetch_command, unavailable_as_error
from tokencompose.model_configs import in_meta_build
from tokencompose.types import EncoderOutput, EncoderRequest


def _create_pretrained(model_name: str, pretrained: str | None) -> open_clip.CLIP:
    """``open_clip.create_model`` with the weights' hub repo checked first (``hub.check_access``), so a missing
    or unreachable one fails at once, naming the recipe's value and the repo to fetch."""
    if model_name.startswith("hf-hub:"):
        value, repo = model_name, model_name.removeprefix("hf-hub:")
    elif pretrained is not None and not Path(pretrained).expanduser().exists():
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        hub = open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub", "")
        if not hub and pretrained not in tags:
            raise WeightsUnavailable("OpenCLIPEncoder", pretrained, f"neither a file nor a pretrained tag of "
                                     f"{model_name} (tags: {tags})", "a local checkpoint file, or one of the tags", hub=False)
        value, repo = pretrained, "/".join(hub.split("/")[:2]) or None  # a tag with only a URL: open_clip fetches it
    else:
        value, repo = pretrained or model_name, None
    if repo is not None:
        try:
            check_access("OpenCLIPEncoder", repo)
        except WeightsUnavailable as error:
            raise WeightsUnavailable("OpenCLIPEncoder", value, f"its weights are the hub's {repo}: {error.reason}",
                                     error.fetch) from None
    fetch = hub_fetch_command(repo) if repo else "the checkpoint file `pretrained` names (or a pretrained tag)"
    with unavailable_as_error("OpenCLIPEncoder", value, fetch, hub=repo is not None):
        return open_clip.create_model(model_name, pretrained=pretrained, weights_only=True)


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

    Any input size works, also non-square (positions resampled with antialiased bicubic, as the official
    LeGrad/MaskInversion code); at another size than the configured one the model must pool the class token.
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
            if in_meta_build():  # no weights: open_clip's own architecture table is the published configuration
                clip = open_clip.create_model(model_name, pretrained=None)
            else:
                clip = _create_pretrained(model_name, pretrained)
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

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks)

    def position_table(self, grid: tuple[int, int]) -> Tensor:
        return resample_grid_positions(self.visual.positional_embedding, tuple(self.visual.grid_size), grid)

    def embeds(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1 + h*w, C): the tokens entering block 0 — open_clip's ``VisionTransformer._embeds``
        (patch convolution, class token, positions, patch dropout, pre-norm) with ``position_table`` of the
        input's grid, so any input size works."""
        visual = self.visual
        grid = self.grid_of(pixels)
        x = rearrange(visual.conv1(pixels), "b c h w -> b (h w) c")  # (B, h*w, C)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.position_table(grid).to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x))

    def block_input(self, pixels: Tensor, block: int) -> Tensor:
        """(B, 3, H, W) -> (B, T, C): the tokens entering block ``block``."""
        x = self.embeds(pixels)
        if block == 0:
            return x
        _, (x,) = self.visual.transformer.forward_intermediates(x, indices=[block - 1], stop_early=True)
        return x

    def _block(self, block: int) -> nn.Module:
        resblock = self.visual.transformer.resblocks[block]
        if not isinstance(resblock.attn, nn.MultiheadAttention):
            raise NotImplementedError(f"OpenCLIPEncoder: block attention {type(resblock.attn).__name__} is not supported")
        return resblock

    def attention_inputs(self, block: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        attn = self._block(block).attn
        qkv = F.linear(self._block(block).ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (rearrange(t, "b t (h c) -> b h t c", h=attn.num_heads) for t in qkv.chunk(3, dim=-1))
        return q, k, v, attn.head_dim**-0.5

    def finish_block(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        resblock = self._block(block)
        x = x + resblock.ls_1(resblock.attn.out_proj(rearrange(context, "b h t c -> b t (h c)")))
        return x + resblock.ls_2(resblock.mlp(resblock.ln_2(x)))

    def pooled_block_output(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        resblock = self._block(block)
        mlp = resblock.mlp
        x = x + resblock.ls_1(resblock.attn.out_proj(rearrange(context, "b h t c -> b t (h c)")))
        hidden = mlp.gelu(mlp.c_fc(resblock.ln_2(x)))  # (B, T, 4C)
        # c_proj and the layer scale are linear: averaging first gives the same result
        return x.mean(dim=1) + resblock.ls_2(mlp.c_proj(hidden.mean(dim=1)))

    def project_pooled(self, pooled: Tensor) -> Tensor:
        return self.visual.ln_post(pooled) @ self.visual.proj

    def projection_matrix(self) -> Tensor:
        return self.visual.proj  # (Dv, De)

    def forward(self, pixels: Tensor, request: EncoderRequest | None = None) -> EncoderOutput:
        """(B, 3, H, W) -> EncoderOutput(cls (B, Dv), patches (B, h, w, Dv), embedding (B, De), + ``request``)."""
        request = request or EncoderRequest()
        needed = self.request_blocks(request)
        if 0 in needed:
            raise ValueError("OpenCLIPEncoder: attention of the first block is not available (its input is not exposed)")
        indices = sorted({self._block_index} | {block - 1 for block in needed})  # a block's input: the output before
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            outputs, embedding = self._block_outputs(pixels, indices)
            tokens = dict(zip(indices, outputs, strict=True))  # block -> its output (B, 1 + h*w, Dv)
            extras = self.answer(request, lambda block: tokens[block - 1])
        selected = tokens[self._block_index]
        patches = rearrange(selected[:, 1:], "b (h w) d -> b h w d", h=self.grid_of(pixels)[0])
        return EncoderOutput(cls=selected[:, 0], patches=patches, embedding=embedding, **extras)

    def _block_outputs(self, pixels: Tensor, indices: list[int]) -> tuple[list[Tensor], Tensor]:
        """(B, 3, H, W) -> the outputs (B, T, C) of blocks ``indices`` and the image embedding (B, De)."""
        if self.grid_of(pixels) == tuple(self.visual.grid_size):
            # the checkpoint's grid: open_clip's own forward, whatever pooling the model was built with
            out = self.visual.forward_intermediates(pixels, indices=indices, output_fmt="NLC", output_extra_tokens=True)
            pairs = zip(out["image_intermediates_prefix"], out["image_intermediates"], strict=True)
            return [torch.cat(pair, dim=1) for pair in pairs], out["image_features"]
        if self.visual.attn_pool is not None or self.visual.pool_type != "tok":
            raise NotImplementedError(
                f"OpenCLIPEncoder: inputs of another size than {self.image_size} px need class-token pooling; "
                f"this model has pool_type={self.visual.pool_type!r}, attn_pool={self.visual.attn_pool is not None}"
            )
        # open_clip's embedding cannot take another grid; ours can, and its transformer takes embedded tokens
        final, outputs = self.visual.transformer.forward_intermediates(self.embeds(pixels), indices=indices)
        return outputs, self.project_pooled(final[:, 0])
