"""What is optimized and how: targets, loss, optimizer and learning-rate schedule.

Plain functions with explicit arguments, so the loop, the benchmark and the tests build
exactly the same objects the trainer does.
"""

from __future__ import annotations

import math

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


def build_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the parameters that require grad (frozen ones stay out).

    fused: torch's fused kernel (one launch for all parameters instead of a few per tensor); the
    trainer asks for it on CUDA, where a small model's step is launch-bound, and not on CPU.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    kernel = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kernel)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kernel)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kernel)
    raise ValueError(f"unknown optimizer '{name}'; known: sgd, adam, adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, *, total_updates: int,
                    warmup_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier per optimizer update: constant ('none') or linear warm-up then cosine to 0.

    Counted in optimizer updates of ONE process (the trainer steps it once per real update),
    so the curve does not depend on the number of processes.
    """
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: 1.0)
    if name != "cosine":
        raise ValueError(f"unknown schedule '{name}'; known: none, cosine")

    def cosine(update: int) -> float:
        if update < warmup_updates:
            return (update + 1) / warmup_updates
        progress = (update - warmup_updates) / max(1, total_updates - warmup_updates)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
