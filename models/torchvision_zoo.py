"""Every torchvision classification network under its torchvision name, with the data's logits.

    --model convnext_tiny                 from random initialization
    --model convnext_tiny --pretrained    torchvision's DEFAULT ImageNet weights, a new classifier

The names are torchvision's (``torchvision.models.list_models(module=torchvision.models)``).
Where one is also ours (alexnet, resnet18, resnet50: models/alexnet.py, models/resnet.py) ours
is registered first and wins: the same torchvision network with the same head.

The network is torchvision's own, built with ``num_classes=num_logits``: torchvision makes the
classifier (``fc``, ``classifier[-1]``, ``heads.head``, squeezenet's 1x1 conv, ...) with its own
initialization. ``classifier_name`` finds that layer generically, for loading ImageNet weights
around it and for ``freeze_features``. A network is always built as torchvision builds it for
its DEFAULT weights (vit_h_14 at 518 px, maxvit_t at 224, googlenet and inception_v3 taking
ImageNet-normalized input, without their auxiliary heads), so the from-scratch and the pretrained
network have the same layers and a run's tools rebuild it without the ImageNet file.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from accelerate import init_on_device
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

from shards.classes import VOC

from .registry import is_registered, register_model
from .weights import cached_weights_path, check_pretrained_options, find_weights, load_pretrained

# Auxiliary ImageNet classifiers of the DEFAULT weights files: the networks here are built without
# them (they only add a training loss in torchvision's ImageNet recipe), so their keys are skipped.
AUX_HEADS: dict[str, tuple[str, ...]] = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


# torchvision's DenseNet files predate its current layer names ("norm.1" is now "norm1"); torchvision
# renames them in a private loader (densenet._load_state_dict), so the same rename is done here.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _current_key(key: str) -> str:
    old = _DENSENET_OLD_KEY.match(key)
    return old.group(1) + old.group(2) if old else key


def default_weights(name: str) -> WeightsEnum:
    """The ImageNet weights torchvision picks for ``name`` (``weights="DEFAULT"``)."""
    return get_model_weights(name).DEFAULT


def imagenet_file(name: str) -> str:
    """Where the torch hub cache keeps ``name``'s DEFAULT weights (it may not exist)."""
    return str(cached_weights_path(default_weights(name)))


def find_imagenet_file(name: str) -> Path:
    """``name``'s DEFAULT ImageNet weights file in the torch hub cache; PretrainedWeightsMissing (saying
    where to put it) when it is not there. Also for our alexnet, resnet18, resnet50: their
    ``*_pretrained`` files are torchvision's DEFAULT ones."""
    return find_weights(name, default_weights(name), None)


def _architecture_options(name: str) -> dict:
    """The layer settings torchvision's builder takes from the DEFAULT weights (see the module doc)."""
    meta = default_weights(name).meta
    if name.startswith("vit_"):
        return {"image_size": meta["min_size"][0]}
    if name == "maxvit_t":
        return {"input_size": meta["min_size"]}
    if name in AUX_HEADS:
        return {"aux_logits": False, "transform_input": True, "init_weights": True}
    return {}


def _network(name: str, num_logits: int) -> nn.Module:
    return get_model(name, weights=None, num_classes=num_logits, **_architecture_options(name))


@functools.cache
def classifier_name(name: str) -> str:
    """Module path of ``name``'s classifier (e.g. "fc", "classifier.1", "heads.head").

    The classifier is the one layer whose parameter shapes follow ``num_classes``: two meta builds
    with different widths differ there and nowhere else, whatever the layer is called or is.
    """
    shapes = []
    for width in (3, 5):
        with init_on_device(torch.device("meta")):
            shapes.append({key: value.shape for key, value in _network(name, width).state_dict().items()})
    changed = {key.rsplit(".", 1)[0] for key in shapes[0] if shapes[0][key] != shapes[1][key]}
    if len(changed) != 1:
        raise RuntimeError(f"{name}: expected one classifier layer to follow num_classes, found {sorted(changed)}")
    return changed.pop()


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(num_logits: int = VOC.num_logits, pretrained: bool = False,
              weights: str | os.PathLike | None = None, freeze_features: bool = False) -> nn.Module:
        check_pretrained_options(name, pretrained, weights, freeze_features)
        # Before building: a missing file fails at once, not after a big network is initialized.
        path = find_weights(name, default_weights(name), weights) if pretrained else None
        model = _network(name, num_logits)
        if path is None:
            return model
        rename = _current_key if name.startswith("densenet") else None
        return load_pretrained(model, name, path, head=classifier_name(name), freeze_features=freeze_features,
                               unused=AUX_HEADS.get(name, ()), rename=rename)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"torchvision's {name} with a num_logits-way classifier; pretrained: its DEFAULT ImageNet "
                     "weights from the torch hub cache or weights=PATH (see models.weights).")
    return build


def register_torchvision_models() -> None:
    """Register every torchvision classification name that is not already ours."""
    for name in torchvision.models.list_models(module=torchvision.models):
        if not is_registered(name):
            register_model(name, source="torchvision")(_builder(name))


register_torchvision_models()
