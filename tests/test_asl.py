"""The asymmetric loss and label smoothing against the paper's formula, written out per element (fast)."""

import math

import pytest
import torch

from shards.classes import VOC, ClassList
from trainer.recipe.asl import AsymmetricLoss
from trainer.recipe.loss import AslSettings, build_loss, logit_targets


def paper_asl(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float) -> float:
    """Ridnik et al. 2021, eq. (5)-(6), one element at a time in plain floats; averaged over the elements."""
    total = 0.0
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        p_m = max(p - clip, 0.0)
        loss_pos = (1 - p) ** gamma_pos * math.log(p)
        loss_neg = p_m ** gamma_neg * math.log(1 - p_m)
        total += -y * loss_pos - (1 - y) * loss_neg
    return total / logits.numel()


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [
    (0, 0, 0), (4, 0, 0.05), (4, 1, 0.05), (2, 1, 0), (0, 0, 0.2), (1, 3, 0.5)])
def test_asl_matches_the_papers_formula(gamma_neg, gamma_pos, clip):
    torch.manual_seed(0)
    logits = torch.randn(5, 21, dtype=torch.float64) * 3
    targets = (torch.rand(5, 21) < 0.3).double()
    got = AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits, targets).item()
    assert got == pytest.approx(paper_asl(logits, targets, gamma_neg, gamma_pos, clip), rel=1e-9)


def test_asl_with_soft_targets_mixes_the_two_terms():
    logits, targets = torch.randn(3, 4, dtype=torch.float64), torch.full((3, 4), 0.25, dtype=torch.float64)
    got = AsymmetricLoss(4, 1, 0.05)(logits, targets).item()
    assert got == pytest.approx(paper_asl(logits, targets, 4, 1, 0.05), rel=1e-9)


def test_asl_without_focusing_or_clip_is_bce_through_build_loss():
    torch.manual_seed(1)
    logits = torch.randn(6, 21)
    states = torch.randint(-1, 2, (6, 20), dtype=torch.int8)
    bce = build_loss("bce", VOC)(logits, states)
    asl = build_loss("asl", VOC, asl=AslSettings(gamma_neg=0, gamma_pos=0, clip=0))(logits, states)
    assert asl.item() == pytest.approx(bce.item(), rel=1e-6)
    # The defaults (4, 0, 0.05) discount negatives: a smaller loss than bce on the same batch.
    assert build_loss("asl", VOC)(logits, states).item() < bce.item()


def test_asl_gradients_stay_finite_at_saturated_and_clipped_logits():
    logits = torch.tensor([[-50.0, -1.0, 0.0, 50.0], [50.0, -50.0, 3.0, -3.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    for gammas in ((4, 0, 0.05), (0.5, 0.5, 0.05), (0, 0, 0), (2, 1, 0)):
        logits.grad = None
        AsymmetricLoss(*gammas)(logits, targets).backward()
        assert torch.isfinite(logits.grad).all(), gammas


def test_label_smoothing_moves_class_targets_and_keeps_the_background_at_0():
    states = torch.tensor([[1, 0, -1]], dtype=torch.int8)
    assert logit_targets(states, 1, smoothing=0.2)[0].tolist() == pytest.approx([0.0, 0.9, 0.1, 0.1])
    assert logit_targets(states, 0, smoothing=0.2)[0].tolist() == pytest.approx([0.9, 0.1, 0.1])
    logits = torch.randn(2, 3, dtype=torch.float64)
    smoothed = build_loss("bce", ClassList(("a", "b", "c")), label_smoothing=0.2)(logits, torch.tensor(
        [[1, 0, -1], [-1, 1, 1]], dtype=torch.int8))
    soft = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.9]], dtype=torch.float64)
    assert smoothed.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, soft).item())


def test_asl_and_smoothing_are_refused_where_they_do_not_apply():
    with pytest.raises(ValueError, match="label smoothing need the 'bce' loss"):
        build_loss("multilabel_soft_margin", VOC, label_smoothing=0.1)
    with pytest.raises(ValueError, match="positive weights need the 'bce' loss"):
        build_loss("asl", VOC, torch.ones(21))
    with pytest.raises(ValueError, match="clip in \\[0, 1\\)"):
        AsymmetricLoss(clip=1.0)
