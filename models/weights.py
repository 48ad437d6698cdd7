"""ImageNet weights for the ``*_pretrained`` models, from local files only.

Nothing on these machines can download, so the weights come from either
  * ``weights=PATH`` (the trainer's ``--weights``), or
  * the torch hub cache, under torchvision's own file name:
    ``torch.hub.get_dir()/checkpoints/<file>`` (= ``$TORCH_HOME/hub/checkpoints/...``),
    which is where ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` would have
    saved it on a machine with internet, so a copied cache just works.
A missing file raises ``PretrainedWeightsMissing`` saying where to put it, before any training.
Files are read with ``torch.load(weights_only=True)``: a state dict of tensors, no pickled code.
"""

import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum


class PretrainedWeightsMissing(FileNotFoundError):
    """The pretrained weights file is not on this machine; the message says where it should be."""


def cached_weights_path(weights_enum: WeightsEnum) -> Path:
    """Where torchvision's hub cache keeps ``weights_enum``'s file (it may not exist)."""
    filename = Path(urlparse(weights_enum.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def find_weights(model_name: str, weights_enum: WeightsEnum, weights: str | os.PathLike | None) -> Path:
    """The file to load: ``weights`` when given, else the hub cache; raise if it is not there.

    Builders call this before building the network, so a missing file fails at once.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsMissing(
                f"{model_name}: weights file {path} (given with weights= / --weights) does not exist. "
                f"Pass the path of a copy of {weights_enum.url}"
            )
        return path
    path = cached_weights_path(weights_enum)
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"{model_name} needs the ImageNet weights {weights_enum} and this machine cannot download them. "
            f"Put the file at {path} (get it on a machine with internet from {weights_enum.url}; "
            "the directory is $TORCH_HOME/hub/checkpoints, or torch.hub.get_dir()/checkpoints), "
            "or pass its path with weights= (the trainer's --weights PATH)."
        )
    return path


def load_pretrained(
    model: nn.Module, model_name: str, path: Path, *, head: str, freeze_features: bool = False,
    unused: tuple[str, ...] = (), rename: Callable[[str], str] | None = None,
) -> nn.Module:
    """Load every tensor of the file at ``path`` except the classifier ``head`` (e.g. "fc") into ``model``.

    ``model`` is built with the data's head, which keeps its fresh initialization. With
    ``freeze_features`` every parameter outside ``head`` gets ``requires_grad=False``
    (BatchNorm running statistics still update in train mode; only the weights are frozen).
    ``unused``: key prefixes of the file that ``model`` does not have (auxiliary ImageNet heads).
    ``rename``: maps the file's key names to the model's (files saved by an older torchvision).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as err:  # truncated, not a .pth, pickled code
        raise ValueError(f"{model_name}: cannot read weights file {path} ({err!r}); it should be a copy of "
                         "torchvision's ImageNet .pth file") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"{model_name}: {path} does not hold a state dict (got {type(state).__name__})")
    prefix = head + "."
    features = OrderedDict((rename(key) if rename else key, value) for key, value in state.items()
                           if not key.startswith((prefix, *unused)))
    # Each module's saved version: torchvision's MNASNet and ViT convert older files by it on load.
    features._metadata = getattr(state, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    try:
        result = model.load_state_dict(features, strict=False)
    except RuntimeError as err:  # tensor shape mismatch: weights of another architecture
        raise ValueError(f"{model_name}: {path} holds weights of another architecture: {err}") from err
    head_keys = sorted(key for key in model.state_dict() if key.startswith(prefix))
    if result.unexpected_keys or sorted(result.missing_keys) != head_keys:
        missing = sorted(set(result.missing_keys) - set(head_keys))
        raise ValueError(
            f"{model_name}: {path} holds weights of another architecture: "
            f"missing keys {missing[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )
    if freeze_features:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(prefix))
    return model


def check_pretrained_options(model_name: str, pretrained: bool, weights: object, freeze_features: bool) -> None:
    """ValueError when a weights file or frozen features are asked for without the ImageNet weights."""
    if not pretrained and (weights is not None or freeze_features):
        asked = "weights=" if weights is not None else "freeze_features"
        raise ValueError(f"{model_name}: {asked} applies to ImageNet weights only; add pretrained=True "
                         "(the trainer's --pretrained)")
