"""Hugging Face CLIP vision towers (``CLIPVisionModel`` / ``CLIPVisionModelWithProjection``)."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from tokencompose.encoders.base import VisionEncoder
from tokencompose.encoders.positions import resample_grid_positions
from tokencompose.hub import from_pretrained
from tokencompose.model_configs import in_meta_build, published_config
from tokencompose.types import EncoderOutput, EncoderRequest


class HFCLIPEncoder(VisionEncoder):
    """A Hugging Face CLIP vision tower behind the ``VisionEncoder`` interface.

    Args:
        name_or_path: a hub name or a local directory written by ``save_pretrained`` (real weights); inside
            ``model_configs.meta_build()`` the shipped configuration of that name, on the meta device.
        config: a ``CLIPVisionConfig`` as a dict, for random weights (tiny test models); exclusive with
            ``name_or_path``.
        with_projection: use ``CLIPVisionModelWithProjection`` so ``embedding`` is the projected CLIP image
            embedding; otherwise ``embedding`` is the post-layernorm CLS (as in LLaVA's vision tower).
        select_layer: index into the hidden states (embeddings + every block) for CLS and patches;
            LLaVA uses -2, the second-to-last block's output. A list of indices concatenates those hidden
            states along the width, in list order (Hugging Face LLaVA's list ``vision_feature_layer``); then
            ``hidden_size`` (the width of CLS and patches) is the tower's width times the number of layers.
        freeze: no gradients, always in eval mode.

    Any input size works, also non-square: positions are resampled with antialiased bicubic as the official
    LeGrad/MaskInversion code does, not with HF's own ``interpolate_pos_encoding`` (plain bicubic).
    """

    def __init__(
        self,
        *,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        with_projection: bool = True,
        select_layer: int | list[int] = -2,
        freeze: bool = True,
    ) -> None:
        super().__init__(select_layer=select_layer, freeze=freeze)
        if (name_or_path is None) == (config is None):
            raise ValueError("HFCLIPEncoder: give exactly one of `name_or_path` (real weights) or `config` (random)")
        model_cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
        if name_or_path is not None and not in_meta_build():
            self.model = from_pretrained("HFCLIPEncoder", name_or_path, model_cls.from_pretrained)
        elif name_or_path is not None:  # the published architecture, no weights
            self.model = model_cls(CLIPConfig(**published_config(name_or_path)).vision_config)
        else:
            self.model = model_cls(CLIPVisionConfig(**config))
        cfg: CLIPVisionConfig = self.model.config
        self.feature_layers = _feature_layers(select_layer, cfg.num_hidden_layers)
        self.with_projection = with_projection
        self.hidden_size = cfg.hidden_size * len(self.feature_layers)
        self.embed_dim = cfg.projection_dim if with_projection else cfg.hidden_size
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        # CLIP's published normalisation (the values CLIPImageProcessor ships with).
        self.image_mean = (0.48145466, 0.4578275, 0.40821073)
        self.image_std = (0.26862954, 0.26130258, 0.27577711)
        self._apply_freeze()

    @property
    def _vision(self):  # CLIPVisionModel is the transformer itself; the projection variant wraps one
        return getattr(self.model, "vision_model", self.model)

    def forward(self, pixels: Tensor, request: EncoderRequest | None = None) -> EncoderOutput:
        """(B, 3, H, W) -> EncoderOutput(cls (B, Dv), patches (B, h, w, Dv), embedding (B, De), + ``request``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self._run(pixels)
        states = [out.hidden_states[layer] for layer in self.feature_layers]  # each (B, 1 + h*w, C)
        hidden = states[0] if len(states) == 1 else torch.cat(states, dim=-1)  # (B, 1 + h*w, Dv), Dv = C * layers
        embedding = out.image_embeds if self.with_projection else out.pooler_output
        patches = rearrange(hidden[:, 1:], "b (h w) d -> b h w d", h=self.grid_of(pixels)[0])
        extras = self.answer(request or EncoderRequest(), lambda block: out.hidden_states[block])  # input of block
        return EncoderOutput(cls=hidden[:, 0], patches=patches, embedding=embedding, **extras)

    def position_table(self, grid: tuple[int, int]) -> Tensor:
        embeddings = self._vision.embeddings
        # position_ids is arange(1 + h*w), so the table HF adds is the embedding weight itself
        return resample_grid_positions(embeddings.position_embedding.weight, (self.grid_size, self.grid_size), grid)

    def embeddings(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1 + h*w, C): ``CLIPVisionEmbeddings`` (patch convolution, class token, positions)
        with ``position_table`` of the input's grid — not HF's ``interpolate_pos_encoding``, which resamples
        with plain bicubic (no antialiasing) and so differs from the official LeGrad/MaskInversion."""
        module = self._vision.embeddings
        grid = self.grid_of(pixels)
        patch = module.patch_embedding(pixels.to(module.patch_embedding.weight.dtype))
        patch = rearrange(patch, "b c h w -> b (h w) c")  # (B, h*w, C)
        cls = module.class_embedding.expand(patch.shape[0], 1, -1)  # (B, 1, C)
        return torch.cat([cls, patch], dim=1) + self.position_table(grid)

    def _run(self, pixels: Tensor):
        """The library's forward with all hidden states, at any input size.

        At the configured size it is HF's forward unchanged. At another size, ``interpolate_pos_encoding=True``
        lifts HF's size check and a forward hook replaces the embedding layer's output with ``embeddings``
        (antialiased positions); the rest of the forward (blocks, hidden states, pooling, projection) is HF's.
        """
        self.grid_of(pixels)  # a clear error for an input smaller than a patch, before HF's convolution fails
        if tuple(pixels.shape[-2:]) == (self.image_size, self.image_size):
            return self.model(pixel_values=pixels, output_hidden_states=True)
        hook = self._vision.embeddings.register_forward_hook(lambda *_: self.embeddings(pixels))
        try:
            return self.model(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
        finally:
            hook.remove()

    @property
    def num_blocks(self) -> int:
        return len(self._vision.encoder.layers)

    def block_input(self, pixels: Tensor, block: int) -> Tensor:
        """(B, 3, H, W) -> (B, T, C); hidden state ``block`` is the input of block ``block``."""
        return self._run(pixels).hidden_states[block]

    def attention_inputs(self, block: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        layer = self._vision.encoder.layers[block]
        attn = layer.self_attn
        h = layer.layer_norm1(x)
        split = lambda t: rearrange(t, "b t (h c) -> b h t c", h=attn.num_heads)  # noqa: E731
        return split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h)), attn.scale

    def finish_block(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        layer = self._vision.encoder.layers[block]
        x = x + layer.self_attn.out_proj(rearrange(context, "b h t c -> b t (h c)"))
        return x + layer.mlp(layer.layer_norm2(x))

    def pooled_block_output(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        layer = self._vision.encoder.layers[block]
        x = x + layer.self_attn.out_proj(rearrange(context, "b h t c -> b t (h c)"))
        hidden = layer.mlp.activation_fn(layer.mlp.fc1(layer.layer_norm2(x)))  # (B, T, 4C)
        return x.mean(dim=1) + layer.mlp.fc2(hidden.mean(dim=1))  # fc2 is linear: mean first

    def project_pooled(self, pooled: Tensor) -> Tensor:
        pooled = self._vision.post_layernorm(pooled)
        return self.model.visual_projection(pooled) if self.with_projection else pooled

    def projection_matrix(self) -> Tensor:
        if len(self.feature_layers) > 1:
            raise ValueError(
                f"HFCLIPEncoder: select_layer={list(self.feature_layers)} concatenates several layers; the final "
                "projection maps one layer's tokens, so there is no (Dv, De) projection matrix"
            )
        if not self.with_projection:
            return torch.eye(self.hidden_size, device=self.device)
        return self.model.visual_projection.weight.T  # nn.Linear stores (De, Dv)


def _feature_layers(select_layer: int | list[int], num_blocks: int) -> tuple[int, ...]:
    """``select_layer`` as a non-empty tuple of valid hidden-state indices (embeddings + ``num_blocks`` blocks)."""
    layers = (select_layer,) if isinstance(select_layer, int) else tuple(select_layer)
    count = num_blocks + 1
    bad = [layer for layer in layers if not isinstance(layer, int) or not -count <= layer < count]
    if not layers or bad:
        raise ValueError(
            f"HFCLIPEncoder: select_layer={select_layer!r}; give an index, or a non-empty list of indices, in "
            f"[-{count}, {count - 1}] (the embeddings and {num_blocks} blocks)"
        )
    return layers
