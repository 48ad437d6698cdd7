"""Which parameters get which learning rate and weight decay: the optimizer's parameter groups.

The head (the layer that makes the logits) may learn faster than the body it sits on, the usual
fine-tuning recipe; normalization weights and biases may be kept out of weight decay, which
would otherwise pull BatchNorm's scales toward 0 without regularizing anything (they are
scale-free: the next normalization undoes them). Every group carries its own `lr`, so a
schedule (a multiplier of each group's initial lr) moves all of them together.
"""

from __future__ import annotations

from torch import nn

from models.logits import logit_layer

# Layers whose weight is a per-channel scale, not a filter: decay there shrinks activations, not capacity.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def no_decay_parameters(model: nn.Module) -> set[int]:
    """ids of every normalization layer's parameters and of every bias."""
    return {id(p) for module in model.modules() for name, p in module.named_parameters(recurse=False)
            if isinstance(module, NORM_LAYERS) or name == "bias"}


def parameter_groups(model: nn.Module, *, lr: float, weight_decay: float, head_lr_scale: float = 1.0,
                     num_logits: int | None = None, no_decay_norm_bias: bool = False) -> list[dict]:
    """The trainable parameters in groups of equal (lr, weight decay), in model order within each;
    the body's decayed group first (its lr is the one a run logs). With the defaults, one group of
    every trainable parameter in model order: the optimizer the trainer always built."""
    head = {id(p) for p in logit_layer(model, num_logits).parameters()} if head_lr_scale != 1 else set()
    exempt = no_decay_parameters(model) if no_decay_norm_bias else set()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {
        (lr, weight_decay): [], (lr, 0.0): [], (lr * head_lr_scale, weight_decay): [], (lr * head_lr_scale, 0.0): []}
    for p in model.parameters():
        if p.requires_grad:
            key = (lr * head_lr_scale if id(p) in head else lr, 0.0 if id(p) in exempt else weight_decay)
            groups[key].append(p)
    return [{"params": params, "lr": group_lr, "weight_decay": decay}
            for (group_lr, decay), params in groups.items() if params]
