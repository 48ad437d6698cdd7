"""Every network the trainer can train, created by name: ``create_model("vocnet")``.

The family modules are imported here, explicitly, so that their ``@register_model``
builders are in the registry as soon as ``models`` is imported.
"""

from pathlib import Path

from . import alexnet, basenet, final, resnet, vocnet  # noqa: F401  (registers the builders)
from . import torchvision_zoo  # noqa: F401  (after ours: a torchvision name that is also ours stays ours)
from . import timm_zoo  # noqa: F401  (timm/NAME, resolved on first use; timm itself is imported only then)
from .describe import describe
from .registry import check_model_name, create_model, list_models, meta_architecture, register_model, takes_option
from .weights import PretrainedWeightsMissing


def find_pretrained_file(name: str) -> Path:
    """The ImageNet weights file model ``name`` loads with pretrained=True and no weights=PATH:
    torchvision's in the torch hub cache; a timm/ model has none (weights=PATH only).
    PretrainedWeightsMissing says where to put or what to pass."""
    if name.startswith(timm_zoo.PREFIX):
        return timm_zoo.find_weights_file(name, None)
    return torchvision_zoo.find_imagenet_file(name)


__all__ = ["check_model_name", "create_model", "find_pretrained_file", "list_models", "meta_architecture",
           "register_model", "takes_option", "describe", "PretrainedWeightsMissing"]
