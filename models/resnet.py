"""torchvision's ResNet-18 and ResNet-50, ``fc`` -> the data's logits (VOC: 21): from scratch and pretrained.

Not in the report: stronger baselines. Global average pooling, so any input size works.
``resnet50_pretrained`` uses IMAGENET1K_V2 (torchvision's default, 80.9% top-1 vs 76.1% for V1).
"""

import os

from torchvision.models import ResNet, ResNet18_Weights, ResNet50_Weights
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from shards.classes import VOC

from .registry import register_model
from .weights import check_pretrained_options, find_weights, load_pretrained


@register_model()
def resnet18(num_logits: int = VOC.num_logits, pretrained: bool = False,
             weights: str | os.PathLike | None = None, freeze_features: bool = False) -> ResNet:
    """ResNet-18 from random initialization; ``pretrained``: resnet18_pretrained."""
    check_pretrained_options("resnet18", pretrained, weights, freeze_features)
    if pretrained:
        return resnet18_pretrained(weights, freeze_features, num_logits)
    return tv_resnet18(weights=None, num_classes=num_logits)


@register_model()
def resnet50(num_logits: int = VOC.num_logits, pretrained: bool = False,
             weights: str | os.PathLike | None = None, freeze_features: bool = False) -> ResNet:
    """ResNet-50 from random initialization; ``pretrained``: resnet50_pretrained."""
    check_pretrained_options("resnet50", pretrained, weights, freeze_features)
    if pretrained:
        return resnet50_pretrained(weights, freeze_features, num_logits)
    return tv_resnet50(weights=None, num_classes=num_logits)


@register_model(architecture="resnet18")
def resnet18_pretrained(weights: str | os.PathLike | None = None, freeze_features: bool = False,
                        num_logits: int = VOC.num_logits) -> ResNet:
    """ResNet-18 with ImageNet weights (IMAGENET1K_V1) and a new ``fc``; see ``models.weights``."""
    path = find_weights("resnet18_pretrained", ResNet18_Weights.IMAGENET1K_V1, weights)
    model = tv_resnet18(weights=None, num_classes=num_logits)
    return load_pretrained(model, "resnet18_pretrained", path, head="fc", freeze_features=freeze_features)


@register_model(architecture="resnet50")
def resnet50_pretrained(weights: str | os.PathLike | None = None, freeze_features: bool = False,
                        num_logits: int = VOC.num_logits) -> ResNet:
    """ResNet-50 with ImageNet weights (IMAGENET1K_V2) and a new ``fc``; see ``models.weights``."""
    path = find_weights("resnet50_pretrained", ResNet50_Weights.IMAGENET1K_V2, weights)
    model = tv_resnet50(weights=None, num_classes=num_logits)
    return load_pretrained(model, "resnet50_pretrained", path, head="fc", freeze_features=freeze_features)
