"""Images decode as a viewer shows them, within a pixel budget; frames keep numeric order."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from tokencompose.data import ShardStream, decode_sample, write_shard
from tokencompose.data.processing import sample_images
from tokencompose.data.shards import MAX_IMAGE_SIDE, DecodeError, encode_png


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_png_keeps_its_intensities():
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    decoded = np.asarray(decode_sample({"png": png(Image.fromarray(grey))})["png"])
    assert decoded.shape == (64, 64, 3) and (decoded[..., 0] == decoded[..., 2]).all()
    expected = np.round(grey / 257.0).astype(np.uint8)  # what a viewer shows: 16 bits scaled to 8
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
    assert (decoded == 255).mean() < 0.01  # convert("RGB") alone clips 99.6 % of these pixels to 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue left edge
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    decoded = decode_sample({"jpg": buffer.getvalue()})["jpg"]
    assert decoded.size == (20, 40)  # portrait, as a viewer shows it
    top = np.asarray(decoded)[:5].mean((0, 1))
    assert top[2] > 200 and top[0] < 60  # the blue edge is now on top


def test_frames_keep_numeric_order():
    sample = {f"{i}.jpg": i for i in range(12)} | {"__key__": "video", "json": {}}
    assert sample_images(sample) == list(range(12))  # 0, 1, 2, ... 11; not 0, 1, 10, 11, 2, ...


def test_an_extreme_aspect_ratio_is_refused_before_padding():
    tiny = png(Image.new("L", (30000, 1)))  # ~110 bytes; padded to a square it would be 30000^2 RGB = 2.7 GB
    assert len(tiny) < 200
    with pytest.raises(DecodeError) as error:
        decode_sample({"png": tiny})
    assert error.value.reason == "image too large" and "30000" in str(error.value)
    fits = png(Image.new("L", (MAX_IMAGE_SIDE, 1)))
    assert decode_sample({"png": fits})["png"].size == (MAX_IMAGE_SIDE, 1)


def test_pil_decompression_bomb_guard_is_an_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above this, errors above twice it
    with pytest.raises(DecodeError) as error:
        decode_sample({"png": png(Image.new("RGB", (40, 40)))})  # 1600 pixels: only a warning in PIL
    assert error.value.reason == "image too large"


def test_only_image_formats_are_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(DecodeError) as error:
        decode_sample({"png": eps})  # PIL would hand an EPS to Ghostscript
    assert error.value.reason == "corrupt image"


def test_a_huge_image_is_a_counted_bad_sample(tmp_path, datamodule_processor):
    record = {"conversations": [{"from": "human", "value": "<image>\nhow many shapes are there ?"},
                                {"from": "gpt", "value": "one"}]}
    ok = encode_png(np.zeros((64, 64, 3), dtype=np.uint8))
    write_shard(tmp_path / "s.tar", [
        {"__key__": "huge", "png": png(Image.new("L", (30000, 1))), "json": json.dumps(record).encode()},
        {"__key__": "ok", "png": ok, "json": json.dumps(record).encode()},
    ])
    stream = ShardStream([str(tmp_path / "s.tar")], datamodule_processor, batch_size=1, shuffle=False)
    assert [s.key for s in stream] == ["ok"] and stream.skipped == {"image too large": 1}
