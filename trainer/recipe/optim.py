"""How it is optimized: the optimizer over the trainable parameters, and the learning-rate schedule
counted in optimizer updates."""

from __future__ import annotations

import math

import torch
from torch import nn


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
