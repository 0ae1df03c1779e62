"""Writing WebDataset shards atomically, and decoding their samples without ever unpickling."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image


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


def _decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


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
            raise DecodeError(kind, key, error) from error
    return out


def iterate_shard(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__``, ``__url__``, extension -> bytes) of one shard: a path, ``pipe:`` command or URL."""
    yield from wds.tariterators.tarfile_samples([{"url": url}])
