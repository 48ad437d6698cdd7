"""Every network the trainer can train, created by name: ``create_model("vocnet")``.

The family modules are imported here, explicitly, so that their ``@register_model``
builders are in the registry as soon as ``models`` is imported.
"""

from . import alexnet, basenet, final, resnet, vocnet  # noqa: F401  (registers the builders)
from . import torchvision_zoo  # noqa: F401  (after ours: a torchvision name that is also ours stays ours)
from .describe import describe
from .registry import check_model_name, create_model, list_models, meta_architecture, register_model, takes_option
from .weights import PretrainedWeightsMissing

__all__ = ["check_model_name", "create_model", "list_models", "meta_architecture", "register_model", "takes_option",
           "describe", "PretrainedWeightsMissing"]
