"""timm's networks as ``timm/NAME``, when the timm package is installed (``pip install timm``).

    --model timm/convnext_tiny                                from random initialization
    --model timm/convnext_tiny --pretrained --weights FILE    ImageNet weights from a local file

NAME is any of ``timm.list_models()`` (1,300+ architectures), built by ``timm.create_model`` with
``num_classes=num_logits``: timm makes the classifier and its initialization. They are not
registered one by one: a ``timm/`` name is registered on its first use (models.registry's
namespaces), so ``python -m models`` lists them as one line.

Weights come from a local file only, never a cache or the Hugging Face hub: ``--weights FILE``
(the ``model.safetensors`` or ``pytorch_model.bin`` of the model's hub repository, which the error
names). timm's own loader reads it (``pretrained_cfg_overlay={"file": FILE}``), so its per-model
key conversions apply, into the network with the file's classifier (every key must fit), then
``reset_classifier`` gives it the data's logits. timm's files expect
their own input normalization (``pretrained_cfg["mean"]``, e.g. 0.5 for some ViTs); the trainer
normalizes every model with ImageNet's mean and std, which fine-tuning absorbs.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from shards.classes import VOC

from .registry import register_namespace
from .weights import PretrainedWeightsMissing, check_pretrained_options

PREFIX = "timm/"


def _timm():
    """The timm module; ValueError saying how to get it when it is not installed."""
    try:
        import timm
    except ImportError as err:
        raise ValueError(f"the {PREFIX}NAME models need the timm package, which is not installed: "
                         "pip install timm (or use a torchvision name: python -m models)") from err
    return timm


def catalog_line() -> str:
    """One line for ``python -m models``: the timm/ names are too many to list one by one."""
    try:
        timm = _timm()
    except ValueError:
        return f"{PREFIX}NAME: timm's networks, once the timm package is installed (pip install timm)"
    return (f"{PREFIX}NAME: any of timm {timm.__version__}'s {len(timm.list_models()):,} networks (timm.list_models()), "
            f"e.g. {PREFIX}convnext_tiny; `python -m models {PREFIX}NAME` prints one's layer table.")


def weights_source(arch: str) -> str:
    """Where ``arch``'s default ImageNet weights live (to say in an error): a hub repository or a URL."""
    cfg = _timm().models.get_pretrained_cfg(arch)
    if cfg is None:
        return f"no ImageNet weights are published for {arch}"
    if cfg.hf_hub_id:
        return f"model.safetensors of https://huggingface.co/{cfg.hf_hub_id}"
    return cfg.url or f"the weights of {arch}"


def find_weights_file(name: str, weights: str | os.PathLike | None) -> Path:
    """``weights`` as an existing file; PretrainedWeightsMissing naming what to get otherwise."""
    arch = name.removeprefix(PREFIX)
    if weights is None:
        raise PretrainedWeightsMissing(
            f"{name}: timm models read ImageNet weights from a local file only (this machine cannot download): "
            f"pass --weights PATH, a copy of {weights_source(arch)}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{name}: weights file {path} (given with weights= / --weights) does not "
                                       f"exist. Pass the path of a copy of {weights_source(arch)}")
    return path


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module paths of a timm model's classifier(s) (e.g. ("fc",), ("head", "head_dist") for distilled DeiTs)."""
    names = model.pretrained_cfg["classifier"]
    return (names,) if isinstance(names, str) else tuple(names)


def _builder(name: str) -> Callable[..., nn.Module]:
    arch = name.removeprefix(PREFIX)

    def build(num_logits: int = VOC.num_logits, pretrained: bool = False,
              weights: str | os.PathLike | None = None, freeze_features: bool = False) -> nn.Module:
        check_pretrained_options(name, pretrained, weights, freeze_features)
        if not pretrained:
            return _timm().create_model(arch, pretrained=False, num_classes=num_logits)
        path = find_weights_file(name, weights)  # before building: a missing file fails at once
        # Loaded with the file's own classifier, strictly, then replaced: timm loads a file into a model
        # of another width non-strictly, which would let another architecture's file through unsaid.
        try:
            model = _timm().create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except (RuntimeError, KeyError, ValueError) as err:  # missing, unexpected or misshapen keys
            raise ValueError(f"{name}: {path} does not hold weights of {arch}: {' '.join(str(err).split())[:300]}") from err
        model.reset_classifier(num_logits)
        if freeze_features:
            heads = tuple(f"{head}." for head in classifier_names(model))
            for key, param in model.named_parameters():
                param.requires_grad_(key.startswith(heads))
        return model

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"timm's {arch} with a num_logits-way classifier; pretrained: ImageNet weights from the local "
                     "file weights=PATH (see models.timm_zoo).")
    return build


def resolve(arch: str) -> Callable[..., nn.Module]:
    """The builder of ``timm/arch``; ValueError when timm is missing or has no such architecture."""
    timm = _timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ValueError(f"unknown model '{PREFIX}{arch}': timm {timm.__version__} has no architecture '{arch}'{hint} "
                         "(timm.list_models() lists them)")
    return _builder(PREFIX + arch)


register_namespace(PREFIX, resolve, source="timm")
