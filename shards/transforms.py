"""Named transform presets (torchvision.transforms.v2) and on-device normalization.

The loaders apply these to uint8 images and return uint8 batches; `normalize` turns a
batch into ImageNet-normalized floats on whatever device it lives on (so a GPU does the
float work and the host-to-device copy moves 4x fewer bytes).

SPEC: evaluation view = Resize(227) then CenterCrop(227); the augmentation that helped
the report's final network = RandomResizedCrop(227) + RandomHorizontalFlip.
"""

from __future__ import annotations

import functools

import torch
from torchvision.transforms import v2

from shards.classes import IMAGENET_MEAN, IMAGENET_STD

TRAIN_PRESETS: tuple[str, ...] = ("none", "flip", "crop_flip")


def eval_transform(size: int = 227) -> v2.Transform:
    """The evaluation view: shorter side to `size`, then the central size x size crop."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def train_transform(preset: str = "crop_flip", size: int = 227) -> v2.Transform:
    """Train-time view by name: "none" (= eval view), "flip", "crop_flip" (the default)."""
    if preset == "none":
        return eval_transform(size)
    if preset == "flip":
        return v2.Compose([eval_transform(size), v2.RandomHorizontalFlip(0.5)])
    if preset == "crop_flip":
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(0.5)])
    raise ValueError(f"unknown train preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any device) -> float32, scaled to [0, 1], ImageNet mean/std."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images from the shard loaders, got {images.dtype}")
    scale, shift = _affine(images.device)
    return images.float().mul_(scale).add_(shift)


@functools.lru_cache(maxsize=None)
def _affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / 255 - mean) / std as x * scale + shift, [1, 3, 1, 1] each, made once per device:
    building them per batch would be a blocking host-to-GPU copy on every step."""
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std)
    shift = -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std
    return scale.to(device), shift.to(device)
