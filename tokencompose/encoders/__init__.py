"""Vision encoders: one interface (``VisionEncoder``), open_clip and Hugging Face CLIP implementations."""

from tokencompose.encoders.base import BlockTrace, VisionEncoder
from tokencompose.encoders.hf_clip import HFCLIPEncoder
from tokencompose.encoders.open_clip import OpenCLIPEncoder

__all__ = ["BlockTrace", "HFCLIPEncoder", "OpenCLIPEncoder", "VisionEncoder"]
