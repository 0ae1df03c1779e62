"""VisionZip: keep the tokens the encoder's CLS attends to most, merge the rest into a few contextual tokens.

Ported from the official ``visionzip`` package (dvlab-research/VisionZip, PyPI ``visionzip==0.1.3``:
``visionzip/clip_encoder.py`` ``CLIPVisionTower_VisionZip.forward``, ``visionzip/utils.py``, ``visionzip/main.py``).
Upstream monkey-patches CLIP and LLaVA; here it is a visual tokenizer on the encoder's output, before the LLM:

- dominant tokens: the CLS token of the selected layer, then the ``dominant - 1`` patches with the highest CLS
  attention at encoder layer ``layer`` (post-softmax, summed over heads), in their original order;
- contextual tokens: the remaining patches, in their original order, are split into ``contextual`` targets
  (every ``step = max(1, remaining // contextual)``-th one, the first ``contextual`` of those) and the rest; each
  of the rest joins the target its attention key (layer ``layer``, mean over heads, L2-normalised) is most
  cosine-similar to; a contextual token is its target **plus the mean of the tokens that joined it** (the
  official code adds the target to that mean; it is not the mean of the whole group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.parts import Parts
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, EncoderRequest, ObjectMasks, TokenStream


def split_dominant(score: Tensor, dominant: int) -> tuple[Tensor, Tensor]:
    """(B, T) scores -> indices (B, dominant) of the top ``dominant`` and (B, T - dominant) of the rest, each in
    their original (ascending) order."""
    top = score.topk(dominant, dim=1).indices  # (B, dominant)
    kept = torch.zeros_like(score, dtype=torch.bool).scatter_(1, top, True)  # (B, T)
    order = torch.argsort(kept.to(torch.int8), dim=1, descending=True, stable=True)  # kept first, each in order
    return order[:, :dominant], order[:, dominant:]


def merge_contextual(tokens: Tensor, keys: Tensor, contextual: int) -> Tensor:
    """VisionZip's contextual merge: (B, M, D) tokens with their (B, M, c) keys -> (B, contextual, D).

    Targets are the tokens at positions ``0, step, 2*step, ...`` (the first ``contextual``), step =
    ``max(1, M // contextual)``; every other token joins its most cosine-similar target (by normalised keys,
    ties to the first); each output is the target plus the mean of the tokens that joined it (zero if none).
    """
    count = tokens.shape[1]
    if contextual == 0:
        return tokens[:, :0]
    if contextual > count:
        raise ValueError(f"VisionZip: contextual={contextual} targets but only {count} tokens remain to merge")
    step = max(1, count // contextual)
    targets = torch.arange(0, count, step, device=tokens.device)[:contextual]  # (contextual,)
    others = torch.ones(count, dtype=torch.bool, device=tokens.device)
    others[targets] = False
    metric = F.normalize(keys, dim=-1)  # (B, M, c)
    similarity = metric[:, others] @ metric[:, targets].transpose(1, 2)  # (B, M - contextual, contextual)
    assign = F.one_hot(similarity.argmax(dim=-1), contextual).to(tokens.dtype)  # (B, M - contextual, contextual)
    joined = assign.sum(dim=1).clamp(min=1)[..., None]  # (B, contextual, 1)
    return tokens[:, targets] + (assign.transpose(1, 2) @ tokens[:, others]) / joined


def visionzip_tokens(tokens: Tensor, score: Tensor, keys: Tensor, dominant: int, contextual: int) -> Tensor:
    """(B, T, D) tokens, (B, T) scores, (B, T, c) keys -> (B, dominant + contextual, D): the top-``dominant``
    tokens by score in their original order, then ``merge_contextual`` of the others (in their original order)."""
    kept, rest = split_dominant(score, dominant)
    gather = lambda x, index: x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    merged = merge_contextual(gather(tokens, rest), gather(keys, rest), contextual)  # (B, contextual, D)
    return torch.cat([gather(tokens, kept), merged], dim=1)


class VisionZipTokenizer(VisualTokenizer):
    """VisionZip's dominant + contextual tokens of the encoder's selected layer (training-free; trains as is).

    Args:
        dominant: dominant tokens per image; with ``keep_cls`` the CLS token is the first of them (the official
            ``visionzip(model, dominant=54, contextual=10)`` keeps CLS + 53 patches).
        contextual: merged tokens per image (0: none; the official code needs at least 1).
        layer: the encoder layer whose CLS attention ranks the patches and whose keys merge them; the
            official code uses -2 with LLaVA's ``select_layer=-2``, so attention, keys and tokens come from the
            same block (block ``layer``'s attention and keys, the selected layer's hidden states).
        keep_cls: the CLS token of the selected layer is the first dominant token (official); false when
            another stream carries it (a ``GlobalTokenizer``): then ``dominant`` counts patches only.

    ``dominant`` and ``contextual`` are plain attributes: the budget changes at test time without retraining.
    Budgets from the official README: 54 + 10 = 64 tokens of LLaVA-1.5's 576.
    """

    def __init__(self, dominant: int = 54, contextual: int = 10, layer: int = -2, keep_cls: bool = True) -> None:
        super().__init__()
        if dominant < 1:
            raise ValueError(f"VisionZipTokenizer: dominant={dominant}; must be >= 1")
        if contextual < 0:
            raise ValueError(f"VisionZipTokenizer: contextual={contextual}; must be >= 0")
        self.dominant = dominant
        self.contextual = contextual
        self.layer = layer
        self.keep_cls = keep_cls

    def encoder_request(self) -> EncoderRequest:
        return EncoderRequest(cls_attention=frozenset({self.layer}), attention_keys=frozenset({self.layer}))

    def problems(self, parts: Parts) -> list[str]:
        encoder, problems = parts.encoder, []
        if not -encoder.num_blocks <= self.layer < encoder.num_blocks:
            problems.append(f"layer={self.layer}: the encoder has {encoder.num_blocks} blocks")
        available = self._available(encoder.grid_size**2)
        if self.dominant + self.contextual > available:
            problems.append(
                f"dominant={self.dominant} + contextual={self.contextual} > the {available} tokens there are "
                f"({encoder.grid_size}x{encoder.grid_size} patches{' + CLS' if self.keep_cls else ''})"
            )
        return problems

    def _available(self, patches: int) -> int:
        return patches + 1 if self.keep_cls else patches

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput (cls (B, D), patches (B, h, w, D), cls_attention[layer] (B, H, h*w), attention_keys[layer]
        (B, 1 + h*w, c)) -> TokenStream(tokens (B, dominant + contextual, D), valid (B, dominant + contextual))."""
        patches = features.patches.flatten(1, 2)  # (B, h*w, D)
        if self.dominant + self.contextual > self._available(patches.shape[1]):
            raise ValueError(
                f"VisionZipTokenizer: dominant={self.dominant} + contextual={self.contextual} exceed the "
                f"{self._available(patches.shape[1])} tokens of this input ({patches.shape[1]} patches"
                f"{' + CLS' if self.keep_cls else ''})"
            )
        score = features.cls_attention[self.layer].sum(dim=1)  # (B, h*w): summed over heads, as upstream
        keys = features.attention_keys[self.layer]  # (B, 1 + h*w, c), CLS first
        if self.keep_cls:  # CLS always kept, first: an infinite score puts it in the top and in front
            tokens = torch.cat([features.cls[:, None], patches], dim=1)  # (B, 1 + h*w, D)
            score = torch.cat([score.new_full((score.shape[0], 1), float("inf")), score], dim=1)  # (B, 1 + h*w)
        else:
            tokens, keys = patches, keys[:, 1:]
        tokens = visionzip_tokens(tokens, score, keys, self.dominant, self.contextual)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def dominant_patches(self, features: EncoderOutput) -> Tensor:
        """EncoderOutput.cls_attention[layer] (B, H, h*w) -> indices (B, n) of the patches ``forward`` keeps whole
        as dominant tokens, in raster order (n = dominant, less one for the CLS token it always keeps first)."""
        score = features.cls_attention[self.layer].sum(dim=1)  # (B, h*w), as forward ranks them
        return split_dominant(score, self.dominant - 1 if self.keep_cls else self.dominant)[0]

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.dominant + self.contextual

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
