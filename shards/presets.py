"""Named image views (torchvision.transforms.v2), like torchvision's references/classification/presets.py.

A view maps a uint8 [3, H, W] image to a uint8 [3, S, S] one; the loaders batch those and
the trainer normalizes on the device (shards.transforms.normalize).

SPEC: the evaluation view is Resize(227) then CenterCrop(227); the augmentation that helped
the report's final network is RandomResizedCrop(227) + RandomHorizontalFlip. `randaugment` and
`trivialaugment` add torchvision's policy after that crop and flip, as torchvision's references do
(`--auto-augment`). `--random-erasing P` ends any train view with RandomErasing(P) (pixels to 0, the
mean after normalization is not 0: torchvision's references erase after normalizing; on uint8 the
erased box is black). The default preset is not chosen here: the trainer's config (--augment) holds it.
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


# The per-image policies that follow the crop and flip (torchvision's defaults: RandAugment(2, 9)).
POLICIES: dict[str, Callable[[], v2.Transform]] = {"randaugment": v2.RandAugment,
                                                    "trivialaugment": v2.TrivialAugmentWide}
# Views that start from the stored image (a random crop of it), not from the eval view.
CROPPING: tuple[str, ...] = ("crop_flip", *POLICIES)

# name -> builder(size); "none" trains on the evaluation view itself.
PRESETS: dict[str, Callable[[int], v2.Transform]] = {
    "none": eval_transform, "flip": _flip, "crop_flip": _crop_flip,
    **{name: (lambda size, policy=policy: v2.Compose([_crop_flip(size), policy()])) for name, policy in POLICIES.items()},
}
TRAIN_PRESETS: tuple[str, ...] = tuple(PRESETS)


def after_crop(preset: str, erasing: float) -> v2.Transform | None:
    """What runs on each image after the batched crop and flip of the device loader (shards.resident):
    the preset's policy, then RandomErasing; None when there is nothing."""
    steps = ([POLICIES[preset]()] if preset in POLICIES else []) + ([v2.RandomErasing(erasing)] if erasing else [])
    return v2.Compose(steps) if steps else None


def train_transform(preset: str, size: int, erasing: float = 0.0) -> v2.Transform:
    """The train-time view named `preset` (see PRESETS), then RandomErasing(erasing) when it is above 0."""
    if preset not in PRESETS:
        raise ValueError(f"unknown train preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    view = PRESETS[preset](size)
    return v2.Compose([view, v2.RandomErasing(erasing)]) if erasing else view
