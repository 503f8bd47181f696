"""LeNets++ (Wen et al., ECCV 2016, Fig. 2): the center-loss paper's MNIST network.

Three stages of two 5x5 convolutions (stride 1, padding 2) with PReLU, each followed by 2x2
max pooling (stride 2): 32, 64 and 128 channels, then a fully connected layer to the
embedding (2-D in the paper, for plotting the features). The input size is configurable
(28 for MNIST); the flattened size follows from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facemetric.errors import ConfigError
from facemetric.models.registry import MODELS


def _stage(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 5, stride=1, padding=2),
        nn.PReLU(out_ch),
        nn.Conv2d(out_ch, out_ch, 5, stride=1, padding=2),
        nn.PReLU(out_ch),
        nn.MaxPool2d(2, 2),
    )


@MODELS.register("lenets++", "lenets_pp", "lenetspp")
class LeNetsPlusPlus(nn.Module):
    """``[B, in_channels, input_size, input_size] -> [B, embedding_dim]`` (raw, not normalised).

    Args:
        embedding_dim: output dimension (2 for the paper's feature plots).
        in_channels: 1 for grey digits, 3 for RGB faces.
        input_size: side of the square input (>= 8: three poolings must leave at least 1 pixel).
        widths: channels of the three stages (paper: 32, 64, 128).
    """

    def __init__(
        self,
        embedding_dim: int = 2,
        in_channels: int = 1,
        input_size: int = 28,
        widths: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        if int(input_size) < 8:
            raise ConfigError(f"model.input_size: LeNets++ needs at least 8 pixels, got {input_size}")
        if int(embedding_dim) < 1:
            raise ConfigError(f"model.embedding_dim: expected a positive integer, got {embedding_dim}")
        w1, w2, w3 = (int(w) for w in widths)
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        self.input_size = int(input_size)
        self.features = nn.Sequential(_stage(in_channels, w1), _stage(w1, w2), _stage(w2, w3))
        side = self.input_size // 8
        self.fc = nn.Linear(w3 * side * side, self.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal init for the convolutions (PyTorch's default uniform init lets
        the activations of this BN-free 6-conv stack shrink towards 0 and training stalls)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.features(images), 1))
