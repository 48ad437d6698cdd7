"""The report's own network ("final", ablation row 5, 0.612 test mAP on its leaderboard).

Exactly the report's table (docs/SPEC.md): five 3x3 convolutions with stride 2 and no padding,
each followed by BatchNorm2d + ReLU, a 2x2 maxpool between the third conv and its
BatchNorm, then Linear 2048 -> num_logits (VOC: 21) on the flattened 512x2x2 map.

    227 -conv-> 113 -conv-> 56 -conv-> 27 -pool-> 13 -conv-> 6 -conv-> 2

The convolutions keep their bias (PyTorch's default; the report's table does not say
otherwise) although the BatchNorm after each makes it redundant.
"""

import torch
from torch import nn

from shards.classes import VOC

from .basenet import FixedSizeFlatten
from .registry import register_model


def _conv_bn_relu(in_ch: int, out_ch: int, pool: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class FinalNet(nn.Module):
    """Strided conv stack of the report; needs 227x227 input (the Linear expects a 2x2 map)."""

    def __init__(self, num_logits: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 64),
            *_conv_bn_relu(64, 128),
            *_conv_bn_relu(128, 256, pool=True),
            *_conv_bn_relu(256, 512),
            *_conv_bn_relu(512, 512),
        )
        self.classifier = nn.Sequential(FixedSizeFlatten(512 * 2 * 2, "final"), nn.Linear(2048, num_logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model()
def final(num_logits: int = VOC.num_logits) -> FinalNet:
    """The report's final network, layer for layer."""
    return FinalNet(num_logits)
