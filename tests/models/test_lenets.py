"""LeNets++: the paper's layer structure, configurable sizes, registry."""

import pytest
import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.models import MODELS, LeNetsPlusPlus, build_model


def test_paper_architecture_for_mnist():
    m = build_model("lenets++", embedding_dim=2, input_size=28)
    convs = [layer for layer in m.modules() if isinstance(layer, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(layer, nn.PReLU) for layer in m.modules()) == 6
    assert sum(isinstance(layer, nn.MaxPool2d) for layer in m.modules()) == 3
    assert m.fc.in_features == 128 * 3 * 3 and m.fc.out_features == 2
    assert m(torch.randn(4, 1, 28, 28)).shape == (4, 2)


@pytest.mark.parametrize("size,channels,dim", [(8, 1, 2), (16, 1, 64), (32, 3, 128)])
def test_sizes(size, channels, dim):
    m = LeNetsPlusPlus(embedding_dim=dim, in_channels=channels, input_size=size)
    assert m(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_errors_and_registry():
    assert "lenets++" in MODELS.names()
    with pytest.raises(ConfigError, match="input_size"):
        LeNetsPlusPlus(input_size=4)
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet-9000")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_model("lenets++", embeding_dim=2)
