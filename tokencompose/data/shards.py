"""Writing WebDataset shards atomically, and decoding their samples without ever unpickling."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image, ImageOps

from tokencompose.data.reader import read_shard


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


MASKS_KEY = "objects.masks.npy"  # (K, H, ceil(W / 8)) uint8, bits packed along W; W in json["mask_size"]
EMBEDDINGS_KEY = "objects.emb.npy"  # (K, De) float16


def pack_masks(masks: np.ndarray) -> bytes:
    """(K, H, W) bool -> npy bytes of the bits packed along W (8x smaller than bool)."""
    return encode_npy(np.packbits(masks.astype(bool), axis=-1))


def unpack_masks(packed: np.ndarray, width: int) -> np.ndarray:
    """(K, H, ceil(W / 8)) uint8 -> (K, H, W) bool."""
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)


def write_shard(path: Path, samples: Iterable[dict[str, bytes | str]]) -> int:
    """Write samples (``__key__`` plus extension -> bytes) to ``path`` via a temporary name and a rename, so a
    shard either exists whole or not at all. Returns the number of samples written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with wds.TarWriter(str(tmp), encoder=False) as sink:
            for sample in samples:
                sink.write(sample)
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


MAX_IMAGE_SIDE = 8192  # pad-to-square makes side x side pixels: 8192^2 RGB is 200 MB, the most one image may take
# Formats an image member may really be (".jpg" files are often PNGs; JPEG covers MPO); never EPS, PSD and the like.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ORIENTATION = 0x0112  # the EXIF tag viewers rotate by


class ImageTooLarge(ValueError):
    """An image whose padded square would exceed ``MAX_IMAGE_SIDE`` (or PIL's decompression-bomb limit)."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a viewer shows it: 16- and 32-bit grey levels are scaled to 8 bits (``convert`` would clip them)."""
    if image.mode.startswith("I"):  # "I;16", "I;16B", "I" (how PIL opens 16-bit grey PNGs)
        grey = np.asarray(image).astype(np.float32) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(grey.round(), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def _decode_image(data: bytes, max_side: int = MAX_IMAGE_SIDE) -> Image.Image:
    """Image bytes -> RGB, EXIF orientation applied. The size is checked from the header, before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own guard, as an error
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if max(width, height) > max_side:
                raise ImageTooLarge(f"{width}x{height}: pad-to-square would make {max(width, height)}^2 pixels; "
                                    f"at most {max_side}^2 allowed")
            if image.getexif().get(ORIENTATION, 1) != 1:
                return _to_rgb(ImageOps.exif_transpose(image))
            return _to_rgb(image)


# Only these extensions are decoded; anything else (e.g. .pickle, .pyd) stays raw bytes and is never executed.
SAFE_DECODERS = {
    "png": _decode_image,
    "jpg": _decode_image,
    "jpeg": _decode_image,
    "webp": _decode_image,
    "json": lambda data: json.loads(data),
    "txt": lambda data: data.decode("utf-8"),
    "npy": lambda data: np.load(io.BytesIO(data), allow_pickle=False),
}


class DecodeError(ValueError):
    """A member of a sample could not be decoded; ``reason`` names its kind (``corrupt image``, ...)."""

    def __init__(self, reason: str, key: str, error: Exception) -> None:
        super().__init__(f"{reason} ({key}): {type(error).__name__}: {error}")
        self.reason = reason


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw tar members -> decoded values for known safe extensions (the last dotted part of each key)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        extension = key.rsplit(".", 1)[-1]
        decoder = SAFE_DECODERS.get(extension) if not key.startswith("__") else None
        try:
            out[key] = decoder(value) if decoder is not None else value
        except Exception as error:  # noqa: BLE001 - the decoder's own error says what; we add which kind
            kind = "corrupt image" if extension in ("png", "jpg", "jpeg", "webp") else f"corrupt {extension}"
            if isinstance(error, (ImageTooLarge, Image.DecompressionBombError, Image.DecompressionBombWarning)):
                kind = "image too large"
            raise DecodeError(kind, key, error) from error
    return out


def iterate_shard(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__``, ``__url__``, extension -> bytes) of one shard: a path, ``pipe:`` command or URL.

    A truncated or corrupt tar, or a repeated key, raises ``ShardError`` (after the samples before it); the
    training stream uses ``read_shard`` with a handler instead, to skip and count.
    """
    yield from read_shard(url)
