from typing import get_args

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers.activations import ACT2FN

from tokencompose.projectors import LinearProjector, MLPProjector
from tokencompose.projectors.base import ACTIVATIONS, Activation


def test_mlp2x_gelu_structure_and_shapes():
    projector = MLPProjector(16, 32)
    kinds = [type(m) for m in projector.layers]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear]
    assert projector(torch.randn(2, 5, 16)).shape == (2, 5, 32)
    assert LinearProjector(16, 8)(torch.randn(3, 16)).shape == (3, 8)
    with pytest.raises(ValueError, match="depth"):
        MLPProjector(4, 4, depth=0)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_hugging_face(name):
    """Our names mean what transformers 5.23 ``activations.py`` ``ACT2FN`` means (``projector_hidden_act``)."""
    x = torch.linspace(-6, 6, 101)
    assert_close(ACTIVATIONS[name]()(x), ACT2FN[name](x))


def test_projector_bias_and_activation_options():
    projector = MLPProjector(16, 32, bias=False, activation="silu")
    assert [type(m) for m in projector.layers] == [nn.Linear, nn.SiLU, nn.Linear]
    assert all(layer.bias is None for layer in projector.layers[::2])
    assert LinearProjector(16, 8, bias=False).linear.bias is None
    assert set(ACTIVATIONS) == set(get_args(Activation))
    with pytest.raises(ValueError, match="activation='tanh'"):
        MLPProjector(4, 4, activation="tanh")
