"""Multi-label mixup and cutmix: each image mixed with its partner, the targets by the same weight.

torchvision's MixUp/CutMix take single-label class indices, so the multi-label version is here.
The partner of image i is image B-1-i of the same batch (timm's choice: no permutation to draw).
The weight lam ~ Beta(alpha, alpha):
- mixup: pixels lam * x + (1 - lam) * partner, targets lam * t + (1 - lam) * t_partner;
- cutmix: a box of area (1 - lam) of the image, placed uniformly (clipped at the edges), is
  pasted from the partner; lam then becomes the area actually kept, so the targets are mixed by
  the pasted area.
With both enabled each batch takes one of the two, half the time each (timm's switch_prob 0.5).
Draws come from the global CPU generator: nothing waits on the device, and a checkpoint's RNG
state (Accelerate saves it) makes a resumed run draw the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixed:
    """How a batch was mixed: every row with row B-1-i, keeping `weight` of its own targets."""

    weight: float

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        return self.weight * targets + (1 - self.weight) * targets.flip(0)


@dataclass(frozen=True)
class Mixer:
    mixup: float = 0.0  # Beta alpha, 0 = off
    cutmix: float = 0.0

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, Mixed]:
        """(mixed float images [B, C, H, W], how): see the module docstring."""
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or torch.rand(()).item() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = images.flip(0)
        if not use_cutmix:
            return lam * images + (1 - lam) * partner, Mixed(lam)
        height, width = images.shape[-2:]
        top, left, bottom, right = _box(height, width, 1 - lam)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        return mixed, Mixed(1 - (bottom - top) * (right - left) / (height * width))


def _box(height: int, width: int, area: float) -> tuple[int, int, int, int]:
    """A box of `area` (a fraction) of the image with the image's aspect, centred uniformly, clipped."""
    cut_h, cut_w = round(height * math.sqrt(area)), round(width * math.sqrt(area))
    cy, cx = int(torch.randint(height, ()).item()), int(torch.randint(width, ()).item())
    return (max(cy - cut_h // 2, 0), max(cx - cut_w // 2, 0),
            min(cy + cut_h - cut_h // 2, height), min(cx + cut_w - cut_w // 2, width))


def build_mixer(mixup: float, cutmix: float) -> Mixer | None:
    """The run's mixer; None when both are off (no draw at all: runs without them stay as they were)."""
    return Mixer(mixup, cutmix) if mixup > 0 or cutmix > 0 else None
