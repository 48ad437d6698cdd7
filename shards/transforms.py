"""On-device normalization of the uint8 batches the loaders give (the views are in shards.presets).

The loaders return uint8 batches; `normalize` turns one into ImageNet-normalized floats on
whatever device it lives on, so a GPU does the float work and the host-to-device copy moves
4x fewer bytes.
"""

from __future__ import annotations

import functools

import torch

from shards.classes import IMAGENET_MEAN, IMAGENET_STD


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
