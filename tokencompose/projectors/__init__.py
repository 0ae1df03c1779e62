"""Projectors into the LLM width: linear and ``mlp2x_gelu``."""

from tokencompose.projectors.base import LinearProjector, MLPProjector, Projector, ProjectorFactory

__all__ = ["LinearProjector", "MLPProjector", "Projector", "ProjectorFactory"]
