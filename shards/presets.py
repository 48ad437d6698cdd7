"""Named image views (torchvision.transforms.v2), like torchvision's references/classification/presets.py.

A view maps a uint8 [3, H, W] image to a uint8 [3, S, S] one; the loaders batch those and
the trainer normalizes on the device (shards.transforms.normalize).

SPEC: the evaluation view is Resize(227) then CenterCrop(227); the augmentation that helped
the report's final network is RandomResizedCrop(227) + RandomHorizontalFlip. The default
preset is not chosen here: the trainer's config (trainer.config, --augment) holds it.
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision.transforms import v2


def eval_transform(size: int) -> v2.Transform:
    """The evaluation view: shorter side to `size`, then the central size x size crop."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def _flip(size: int) -> v2.Transform:
    return v2.Compose([eval_transform(size), v2.RandomHorizontalFlip(0.5)])


def _crop_flip(size: int) -> v2.Transform:
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(0.5)])


# name -> builder(size); "none" trains on the evaluation view itself.
PRESETS: dict[str, Callable[[int], v2.Transform]] = {"none": eval_transform, "flip": _flip, "crop_flip": _crop_flip}
TRAIN_PRESETS: tuple[str, ...] = tuple(PRESETS)


def train_transform(preset: str, size: int) -> v2.Transform:
    """The train-time view named `preset` (see PRESETS)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown train preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    return PRESETS[preset](size)
