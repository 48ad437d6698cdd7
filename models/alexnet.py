"""torchvision's AlexNet with the data's logits (VOC: 21): from scratch and from ImageNet weights (docs/SPEC.md).

The whole network is torchvision's; only ``classifier[6]`` (the last Linear) becomes
4096 -> num_logits. Its adaptive average pool lets it take any input of at least 63 px.
"""

import os

from torchvision.models import AlexNet, AlexNet_Weights
from torchvision.models import alexnet as tv_alexnet

from shards.classes import VOC

from .registry import register_model
from .weights import check_pretrained_options, find_weights, load_pretrained


@register_model()
def alexnet(num_logits: int = VOC.num_logits, pretrained: bool = False,
            weights: str | os.PathLike | None = None, freeze_features: bool = False) -> AlexNet:
    """AlexNet from random initialization (the report's 0.0928 test mAP row); ``pretrained``: alexnet_pretrained."""
    check_pretrained_options("alexnet", pretrained, weights, freeze_features)
    if pretrained:
        return alexnet_pretrained(weights, freeze_features, num_logits)
    return tv_alexnet(weights=None, num_classes=num_logits)


@register_model(architecture="alexnet")
def alexnet_pretrained(weights: str | os.PathLike | None = None, freeze_features: bool = False,
                       num_logits: int = VOC.num_logits) -> AlexNet:
    """AlexNet with ImageNet weights (IMAGENET1K_V1) everywhere but a new last Linear (the 0.6821 row).

    ``weights``: path of the .pth file; default: torchvision's file in the torch hub cache.
    ``freeze_features``: train only the new last layer.
    """
    path = find_weights("alexnet_pretrained", AlexNet_Weights.IMAGENET1K_V1, weights)
    model = tv_alexnet(weights=None, num_classes=num_logits)
    return load_pretrained(model, "alexnet_pretrained", path, head="classifier.6", freeze_features=freeze_features)
