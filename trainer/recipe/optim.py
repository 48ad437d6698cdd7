"""How it is optimized: the optimizer over the trainable parameters, and the learning-rate schedule
counted in optimizer updates."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.recipe.param_groups import parameter_groups


def build_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float,
                    fused: bool = False, head_lr_scale: float = 1.0, num_logits: int | None = None,
                    no_decay_norm_bias: bool = False) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the parameters that require grad (frozen ones stay out),
    in the groups of recipe.param_groups (head_lr_scale: the logit layer's lr factor, found by its
    `num_logits` outputs; no_decay_norm_bias: no decay on norm weights and biases).

    fused: torch's fused kernel (one launch for all parameters instead of a few per tensor); the
    trainer asks for it on CUDA, where a small model's step is launch-bound, and not on CPU.
    """
    params = parameter_groups(model, lr=lr, weight_decay=weight_decay, head_lr_scale=head_lr_scale,
                              num_logits=num_logits, no_decay_norm_bias=no_decay_norm_bias)
    kernel = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kernel)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kernel)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kernel)
    raise ValueError(f"unknown optimizer '{name}'; known: sgd, adam, adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, *, total_updates: int,
                    warmup_updates: int, step_updates: tuple[int, ...] = (),
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier per optimizer update: constant ('none'), linear warm-up then cosine to 0
    ('cosine'), or linear warm-up then x `gamma` at each of `step_updates` ('step').

    Counted in optimizer updates of ONE process (the trainer steps it once per real update),
    so the curve does not depend on the number of processes. The multiplier applies to every
    parameter group's own lr.
    """
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: 1.0)
    if name not in ("cosine", "step"):
        raise ValueError(f"unknown schedule '{name}'; known: none, cosine, step")

    def cosine(update: int) -> float:
        if update < warmup_updates:
            return (update + 1) / warmup_updates
        progress = (update - warmup_updates) / max(1, total_updates - warmup_updates)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def step(update: int) -> float:
        warm = (update + 1) / warmup_updates if update < warmup_updates else 1.0
        return warm * gamma ** sum(update >= at for at in step_updates)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine if name == "cosine" else step)
