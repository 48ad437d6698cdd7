"""Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021, arXiv:2009.14119).

Per logit, with p = sigmoid(z), target y and the shifted probability p_m = max(p - clip, 0):

    loss = -y (1 - p)^gamma_pos log(p)  -  (1 - y) p_m^gamma_neg log(1 - p_m)

Easy negatives (p below the margin) drop out entirely and the others are down-weighted by
p_m^gamma_neg, which counters the many negatives of each image. A soft target y (label
smoothing) mixes the two terms. gamma_pos = gamma_neg = clip = 0 is binary cross-entropy.

Reduction: the mean over the batch and the logits, like the other losses here, where the paper
(and its code) sums. The sum is B x L times larger, so a learning rate tuned for bce (and
--lr's default) would be far too large for it; with the mean, --loss bce and --loss asl share one
learning rate, and the zero-gamma, zero-clip case equals bce value for value.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AsymmetricLoss(nn.Module):
    """ASL on (logits [B, L], float targets [B, L] in [0, 1]) -> the mean over all B x L terms."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05) -> None:
        super().__init__()
        if min(gamma_neg, gamma_pos, clip) < 0 or clip >= 1:
            raise ValueError(f"asymmetric loss needs gammas >= 0 and clip in [0, 1), got "
                             f"gamma_neg={gamma_neg}, gamma_pos={gamma_pos}, clip={clip}")
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        log_p = F.logsigmoid(logits)  # log-sigmoid, not log(p): exact for very negative logits
        if self.clip > 0:
            p_m = (p - self.clip).clamp(min=0)
            # 1 - p_m >= clip > 0, so this log is finite without an epsilon.
            log_not_p_m = torch.log1p(-p_m)
        else:
            p_m, log_not_p_m = p, F.logsigmoid(-logits)
        pos_weight, neg_weight = _focus(1 - p, self.gamma_pos), _focus(p_m, self.gamma_neg)
        loss = targets * pos_weight * log_p + (1 - targets) * neg_weight * log_not_p_m
        return -loss.mean()


def _focus(base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    """base ** gamma with a finite gradient everywhere: at base 0 (a saturated or clipped logit) the
    gradient of x ** gamma is infinite for gamma < 1, and infinity times the zero log there is nan.
    A zero exponent is a weight of exactly 1."""
    if not gamma:
        return 1.0
    positive = base > 0
    return torch.where(positive, torch.where(positive, base, 1.0).pow(gamma), 0.0)
