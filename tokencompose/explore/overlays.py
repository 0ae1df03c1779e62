"""Pictures of what a tokenizer keeps, drawn over the image the model sees: pure numpy, (H, W, 3) uint8 in and out."""

from __future__ import annotations

import numpy as np

# distinct colours for object masks (tab10), as uint8 RGB
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"overlay: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")


def blend(image: np.ndarray, colour: np.ndarray, where: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8, colour (3,) or (H, W, 3), where (H, W) bool -> the image with ``colour`` mixed in at
    ``alpha`` where ``where`` holds."""
    out = image.astype(np.float32)
    mixed = (1 - alpha) * out + alpha * np.broadcast_to(colour, image.shape).astype(np.float32)
    out[where] = mixed[where]
    return out.round().clip(0, 255).astype(np.uint8)


def object_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 + masks (K, H, W) bool -> each mask tinted in its palette colour (object k: PALETTE[k % 10]),
    later masks over earlier ones."""
    _check_image(image)
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"object_overlay: masks {masks.shape} do not match the image {image.shape[:2]}")
    out = image
    for k, mask in enumerate(masks.astype(bool)):
        out = blend(out, PALETTE[k % len(PALETTE)], mask, alpha)
    return out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8 + heat (H, W), any range -> the heat, min-max scaled to [0, 1], drawn in red over the image
    in proportion to its value (a flat map draws nothing)."""
    _check_image(image)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap_overlay: map {heat.shape} does not match the image {image.shape[:2]}")
    heat = heat.astype(np.float32)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    weight = alpha * scaled[..., None]  # (H, W, 1)
    red = np.array([255, 0, 0], dtype=np.float32)
    return ((1 - weight) * image.astype(np.float32) + weight * red).round().clip(0, 255).astype(np.uint8)


def kept_patch_overlay(image: np.ndarray, kept: np.ndarray, grid: int, dim: float = 0.75) -> np.ndarray:
    """(H, W, 3) uint8 + indices of kept patches (n,) in raster order on a ``grid`` x ``grid`` patch grid -> the
    dropped patches darkened by ``dim`` (kept ones as they are). H and W must be multiples of ``grid``."""
    _check_image(image)
    height, width = image.shape[:2]
    if height % grid or width % grid:
        raise ValueError(f"kept_patch_overlay: image {height}x{width} is not a multiple of the {grid}x{grid} grid")
    if kept.size and (kept.min() < 0 or kept.max() >= grid * grid):
        raise ValueError(f"kept_patch_overlay: patch indices must be in 0..{grid * grid - 1}, got {kept.tolist()}")
    keep = np.zeros(grid * grid, dtype=bool)
    keep[kept] = True
    cell = keep.reshape(grid, grid).repeat(height // grid, 0).repeat(width // grid, 1)  # (H, W)
    return blend(image, np.zeros(3, dtype=np.uint8), ~cell, dim)


def enlarge(image: np.ndarray, side: int = 256) -> np.ndarray:
    """(H, W, 3) -> the same pixels repeated (nearest neighbour) by the largest whole factor that keeps the longer
    side within ``side``: a 64 px tiny-model picture shown at 256 px, sharp patch edges kept."""
    factor = max(1, side // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
