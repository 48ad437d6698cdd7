"""What is optimized: the targets a batch's devkit states become, and the loss on the logits.

Plain functions with explicit arguments, so the loop, the benchmark and the tests build
exactly the same objects the trainer does.
"""

from __future__ import annotations

import torch
from torch import nn

from shards.classes import CLASSES, NUM_LOGITS


def logit_targets(states: torch.Tensor) -> torch.Tensor:
    """[B, 21] float targets from devkit states [B, 20]: background column 0 is never positive,
    class c is positive where its state is 1 (difficult-only counts negative, per SPEC)."""
    targets = torch.zeros(states.shape[0], NUM_LOGITS, dtype=torch.float32, device=states.device)
    targets[:, 1:] = (states == 1).float()
    return targets


def build_loss(kind: str = "multilabel_soft_margin", pos_weight: torch.Tensor | None = None) -> nn.Module:
    """Loss on (logits [B,21], float targets [B,21]) as logit_targets builds them.

    ``multilabel_soft_margin`` is the reference loss. ``bce`` is numerically the same loss
    (mean of per-logit binary cross-entropy) but accepts per-class positive weights.
    """
    if kind == "multilabel_soft_margin":
        if pos_weight is not None:
            raise ValueError("positive weights need the 'bce' loss")
        return nn.MultiLabelSoftMarginLoss()
    if kind == "bce":
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    raise ValueError(f"unknown loss '{kind}'; known: multilabel_soft_margin, bce")


def auto_pos_weight(positives: dict[str, int], count: int) -> torch.Tensor:
    """negatives / positives per class from the manifest's train split; 1.0 for background.

    A class with no positive image gets weight 1 (there is nothing to up-weight).
    """
    weights = [1.0] + [(count - positives.get(c, 0)) / positives[c] if positives.get(c) else 1.0 for c in CLASSES]
    return torch.tensor(weights, dtype=torch.float32)
