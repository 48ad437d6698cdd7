"""The report's BaseNet (= SimpleClassifier) and its two ablation variants (docs/SPEC.md, ablation rows 1-4).

    simple           conv5-64, conv3-32, conv3-16 (each ReLU + maxpool 2), fc 16*26*26 -> 120 -> 84 -> logits
    basenet_nofc     the same without the two hidden fc layers: flatten -> logits
    basenet_nofc_bn  + BatchNorm2d after each conv (before its ReLU)

Spatial sizes at 227 px: 227 -> 223 -> 111 -> 109 -> 54 -> 52 -> 26. The flatten size is
fixed, so these networks take 227x227 inputs (224..231 give the same 26x26 map).
"""

import math

import torch
from torch import nn

from shards.classes import VOC

from .registry import register_model


class FixedSizeFlatten(nn.Flatten):
    """``nn.Flatten`` that explains a wrong input size instead of a bare matmul shape error."""

    def __init__(self, features: int, model_name: str) -> None:
        super().__init__()
        self.features = features
        self.model_name = model_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if math.prod(x.shape[1:]) != self.features:
            raise ValueError(
                f"model {self.model_name!r} needs 227x227 input: its Linear layer expects "
                f"{self.features} features but the last feature map is {tuple(x.shape[1:])}; "
                "resize the images to 227 or use a model with global pooling (vocnet, resnet18, ...)"
            )
        return super().forward(x)


class BaseNet(nn.Module):
    """Three conv + maxpool stages, then a fully connected classifier on the 16x26x26 map."""

    def __init__(self, name: str, hidden_fc: bool, batchnorm: bool, num_logits: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_ch, out_ch, kernel in ((3, 64, 5), (64, 32, 3), (32, 16, 3)):
            layers.append(nn.Conv2d(in_ch, out_ch, kernel))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        flat = 16 * 26 * 26
        head: list[nn.Module] = [FixedSizeFlatten(flat, name)]
        if hidden_fc:
            head += [nn.Linear(flat, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True)]
            head.append(nn.Linear(84, num_logits))
        else:
            head.append(nn.Linear(flat, num_logits))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model()
def simple(num_logits: int = VOC.num_logits) -> BaseNet:
    """The report's SimpleClassifier (ablation row 1; row 2 is the same network trained with Adam)."""
    return BaseNet("simple", hidden_fc=True, batchnorm=False, num_logits=num_logits)


@register_model()
def basenet_nofc(num_logits: int = VOC.num_logits) -> BaseNet:
    """Ablation row 3: BaseNet with its two hidden fully connected layers removed."""
    return BaseNet("basenet_nofc", hidden_fc=False, batchnorm=False, num_logits=num_logits)


@register_model()
def basenet_nofc_bn(num_logits: int = VOC.num_logits) -> BaseNet:
    """Ablation row 4: row 3 plus BatchNorm2d after each convolution."""
    return BaseNet("basenet_nofc_bn", hidden_fc=False, batchnorm=True, num_logits=num_logits)
