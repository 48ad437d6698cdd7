"""What is optimized: the targets a batch's label states become, and the loss on the logits.

Plain functions with explicit arguments, so the loop, the benchmark and the tests build
exactly the same objects the trainer does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shards.classes import ClassList
from trainer.config import TrainConfig
from trainer.recipe.asl import AsymmetricLoss
from trainer.recipe.mixing import Mixed


def logit_targets(states: torch.Tensor, first_logit: int, smoothing: float = 0.0) -> torch.Tensor:
    """[B, first_logit + C] float targets from label states [B, C]: class c is positive where its
    state is 1 (VOC's difficult-only 0 counts negative, per SPEC); a background logit (VOC's
    column 0, `first_logit` 1) is never positive.

    smoothing EPS: class targets become y (1 - EPS) + EPS / 2, i.e. EPS/2 and 1 - EPS/2, the
    two-outcome form of label smoothing for each independent sigmoid. The background logit stays
    0: it carries no label to be unsure of, and it stays out of every score.
    """
    positive = (states == 1).float()
    if smoothing:
        positive = positive * (1 - smoothing) + smoothing / 2
    return nn.functional.pad(positive, (first_logit, 0)) if first_logit else positive


class StatesLoss(nn.Module):
    """A loss on (logits [B, L], label states [B, C]): the targets are built on the device, inside."""

    def __init__(self, criterion: nn.Module, first_logit: int, smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion, self.first_logit, self.smoothing = criterion, first_logit, smoothing

    def forward(self, logits: torch.Tensor, states: torch.Tensor, mixed: Mixed | None = None) -> torch.Tensor:
        """`mixed`: the batch's images were mixed (recipe.mixing), so are its targets."""
        targets = logit_targets(states, self.first_logit, self.smoothing)
        return self.criterion(logits, targets if mixed is None else mixed.targets(targets))


@dataclass(frozen=True)
class AslSettings:
    """--asl-gamma-neg, --asl-gamma-pos, --asl-clip (trainer.recipe.asl)."""

    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05


def build_loss(kind: str, classes: ClassList, pos_weight: torch.Tensor | None = None, *,
               label_smoothing: float = 0.0, asl: AslSettings = AslSettings()) -> StatesLoss:
    """The loss of the run on the class list's logits.

    ``multilabel_soft_margin`` is the reference loss. ``bce`` is numerically the same loss
    (mean of per-logit binary cross-entropy) but accepts per-logit positive weights and soft
    targets. ``asl`` is the asymmetric loss (trainer.recipe.asl), also a mean per logit.
    """
    if kind == "multilabel_soft_margin":
        if pos_weight is not None or label_smoothing:
            raise ValueError("positive weights and label smoothing need the 'bce' loss")
        return StatesLoss(nn.MultiLabelSoftMarginLoss(), classes.first_logit)
    if kind == "bce":
        return StatesLoss(nn.BCEWithLogitsLoss(pos_weight=pos_weight), classes.first_logit, label_smoothing)
    if kind == "asl":
        if pos_weight is not None:
            raise ValueError("positive weights need the 'bce' loss")
        return StatesLoss(AsymmetricLoss(asl.gamma_neg, asl.gamma_pos, asl.clip), classes.first_logit,
                          label_smoothing)
    raise ValueError(f"unknown loss '{kind}'; known: multilabel_soft_margin, bce, asl")


def run_loss(cfg: TrainConfig, classes: ClassList, pos_weight: torch.Tensor | None = None) -> StatesLoss:
    """build_loss with the run's settings: what the trainer and a run's tools measure with."""
    return build_loss(cfg.loss, classes, pos_weight, label_smoothing=cfg.label_smoothing,
                      asl=AslSettings(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip))


def auto_pos_weight(positives: dict[str, int], count: int, classes: ClassList) -> torch.Tensor:
    """negatives / positives per class from the manifest's train split; 1.0 for a background logit.

    A class with no positive image gets weight 1 (there is nothing to up-weight).
    """
    weights = [1.0] * classes.first_logit + [
        (count - positives.get(c, 0)) / positives[c] if positives.get(c) else 1.0 for c in classes.names]
    return torch.tensor(weights, dtype=torch.float32)
