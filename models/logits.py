"""Which layer of a network makes its logits: for a per-layer learning rate (--head-lr-scale)."""

from __future__ import annotations

from torch import nn


def logit_layer(model: nn.Module, num_logits: int) -> nn.Linear:
    """The model's last nn.Linear with `num_logits` outputs: the layer that makes the logits."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_logits]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear with {num_logits} outputs to scale the lr of")
    return heads[-1]
