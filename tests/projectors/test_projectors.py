import pytest
import torch
from torch import nn

from tokencompose.projectors import LinearProjector, MLPProjector


def test_mlp2x_gelu_structure_and_shapes():
    projector = MLPProjector(16, 32)
    kinds = [type(m) for m in projector.layers]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear]
    assert projector(torch.randn(2, 5, 16)).shape == (2, 5, 32)
    assert LinearProjector(16, 8)(torch.randn(3, 16)).shape == (3, 8)
    with pytest.raises(ValueError, match="depth"):
        MLPProjector(4, 4, depth=0)
