"""Which layer of a network makes its logits: for a per-layer learning rate (--head-lr-scale)."""

from __future__ import annotations

from torch import nn


def logit_layer(model: nn.Module, num_logits: int) -> nn.Module:
    """The model's last layer with `num_logits` outputs: an nn.Linear, or a 1x1 nn.Conv2d (SqueezeNet's
    classifier is a convolution followed by global pooling)."""
    heads = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == num_logits)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_logits and m.kernel_size == (1, 1))]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear (or 1x1 nn.Conv2d) with {num_logits} outputs to "
                         "scale the lr of")
    return heads[-1]
