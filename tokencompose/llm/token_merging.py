"""DPC-KNN token merging (density peaks clustering over k nearest neighbours), as SparseVLM recycles tokens.

Pure functions on tensors, after ``cluster_and_merge`` in Gumpest/SparseVLMs
``llava/model/language_model/utils.py`` (v1.5, commit 535f8ba; the same function since the first release):

1. distances ``d_ij = ||x_i - x_j||_2 / sqrt(D)``;
2. density ``rho_i = exp(-mean of d_ij^2 over the k nearest j)``, self included, with ``k`` = the number of
   clusters, plus a tie-breaking noise below 1e-6;
3. ``delta_i`` = distance to the nearest denser token (the largest distance of the set for the densest one);
4. centres: the ``clusters`` tokens with the largest ``rho * delta`` (in that order: cluster c is centre c);
5. every token joins its nearest centre, a centre its own cluster;
6. merged token = the plain mean of its cluster, ``sum(x) / (count + 1e-6)``.

The official noise is ``torch.rand * 1e-6`` from the global generator; ``tie_break_noise`` draws the same
distribution from a fixed seed, so the merge (and a generated answer) does not change from run to run.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: what the official code adds to the density to break ties (``torch.rand(...) * 1e-6``)
NOISE_SCALE = 1e-6
#: the official mean is ``sum / (count + 1e-6)``
COUNT_EPS = 1e-6


def tie_break_noise(batch: int, tokens: int, seed: int = 0) -> Tensor:
    """(B, N) uniform noise in [0, 1e-6), from a CPU generator with a fixed seed (the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, tokens, generator=generator, dtype=torch.float32) * NOISE_SCALE


def dpc_knn_clusters(x: Tensor, clusters: int, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Tokens (B, N, D), ``clusters`` C <= N, density noise (B, N) (default ``tie_break_noise``) ->
    (assignment (B, N) in [0, C), centres (B, C) token indices, cluster c's centre first). Computed in float32."""
    batch, tokens, width = x.shape
    if not 1 <= clusters <= tokens:
        raise ValueError(f"dpc_knn_clusters: clusters={clusters}; must be in [1, {tokens}] (the number of tokens)")
    if noise is None:
        noise = tie_break_noise(batch, tokens)
    x = x.float()
    # exact pairwise distances (no matmul expansion), as the official (x_i - x_j).norm
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / width**0.5  # (B, N, N)
    nearest = dist.topk(clusters, dim=-1, largest=False).values  # (B, N, k): k = C nearest, self included
    density = (-(nearest**2).mean(-1)).exp() + noise.to(device=x.device, dtype=x.dtype)  # (B, N)
    denser = density[:, None, :] > density[:, :, None]  # (B, N, N): token j is denser than token i
    farthest = dist.flatten(1).max(-1).values[:, None, None]  # (B, 1, 1)
    delta = torch.where(denser, dist, farthest).min(-1).values  # (B, N): to the nearest denser token
    centres = (delta * density).topk(clusters, dim=-1).indices  # (B, C)
    to_centres = dist.gather(1, centres[..., None].expand(-1, -1, tokens))  # (B, C, N)
    assignment = to_centres.argmin(1)  # (B, N): the nearest centre
    order = torch.arange(clusters, device=x.device).expand(batch, clusters)
    assignment.scatter_(1, centres, order)  # a centre is in its own cluster
    return assignment, centres


def cluster_weights(assignment: Tensor, clusters: int) -> Tensor:
    """Assignment (B, N) -> (B, C, N) averaging weights: 1 / (count + 1e-6) for the members of each cluster."""
    members = torch.nn.functional.one_hot(assignment, clusters).transpose(1, 2).float()  # (B, C, N)
    return members / (members.sum(-1, keepdim=True) + COUNT_EPS)


def cluster_and_merge(x: Tensor, clusters: int, noise: Tensor | None = None) -> Tensor:
    """Tokens (B, N, D) -> (B, C, D): the mean of each DPC-KNN cluster, in centre order."""
    assignment, _ = dpc_knn_clusters(x, clusters, noise)
    return (cluster_weights(assignment, clusters).to(x.dtype) @ x)  # (B, C, N) @ (B, N, D)
