"""Projectors into the LLM width: linear and ``mlp2x_gelu``."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
    from tokencompose.projectors.base import LinearProjector, MLPProjector, Projector, ProjectorFactory

EXPORTS = {
    "LinearProjector": "base",
    "MLPProjector": "base",
    "Projector": "base",
    "ProjectorFactory": "base",
}
__all__ = ["LinearProjector", "MLPProjector", "Projector", "ProjectorFactory"]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
