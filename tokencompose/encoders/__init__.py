"""Vision encoders: one interface (``VisionEncoder``), open_clip and Hugging Face CLIP implementations."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
    from tokencompose.encoders.base import BlockTrace, VisionEncoder
    from tokencompose.encoders.hf_clip import HFCLIPEncoder
    from tokencompose.encoders.open_clip import OpenCLIPEncoder

EXPORTS = {
    "BlockTrace": "base",
    "VisionEncoder": "base",
    "HFCLIPEncoder": "hf_clip",
    "OpenCLIPEncoder": "open_clip",
}
__all__ = ["BlockTrace", "HFCLIPEncoder", "OpenCLIPEncoder", "VisionEncoder"]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
