"""Test-time augmentation: each image scored as it is and as its horizontal mirror, probabilities averaged.

A mirrored photo shows the same classes (the reason the flip presets of shards.presets may train
on it), so the mirror is a second opinion on the same labels. The average is of the probabilities
(after the sigmoid), as ML-GCN/ASL's evaluation code does, not of the logits. `none` is the plain
forward, unchanged to the last bit.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn

TTA_CHOICES: tuple[str, ...] = ("none", "flip")


def forward_logits(net: nn.Module, images: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """float32 logits [B, L] of normalized images [B, 3, S, S] under the accelerator's autocast."""
    with accelerator.autocast():
        logits = net(images)
    return logits.float()  # bf16/fp16 under autocast: scores and loss in float32


def probabilities(net: nn.Module, images: torch.Tensor, logits: torch.Tensor, first_logit: int, tta: str,
                  accelerator: Accelerator) -> torch.Tensor:
    """float32 [B, C] class probabilities: sigmoid of `logits` (the plain view's, already computed), averaged
    with the mirrored view's when tta is "flip". first_logit: 1 for VOC's background logit 0, else 0."""
    scores = torch.sigmoid(logits[:, first_logit:])
    if tta == "flip":
        mirrored = forward_logits(net, torch.flip(images, dims=(-1,)), accelerator)
        scores = (scores + torch.sigmoid(mirrored[:, first_logit:])) / 2
    elif tta != "none":
        raise ValueError(f"tta {tta!r} is not one of {', '.join(TTA_CHOICES)}")
    return scores
