"""Loss, positive weights and the learning-rate schedule the trainer builds (fast, no data), and one
tiny 2-process run with every loss and optimization flag (slow)."""

import json

import pytest
import torch
import yaml

from shards.classes import VOC, VOC_CLASSES, ClassList
from trainer.recipe.loss import auto_pos_weight, build_loss, logit_targets
from trainer.recipe.optim import build_optimizer, build_scheduler
from train_helpers import TINY, ddp, history, run


def test_bce_equals_the_reference_soft_margin_loss():
    logits = torch.randn(6, 21)
    states = torch.randint(-1, 2, (6, 20), dtype=torch.int8)
    reference = build_loss("multilabel_soft_margin", VOC)(logits, states).item()
    assert build_loss("bce", VOC)(logits, states) == pytest.approx(reference, rel=1e-6)


def test_voc_targets_keep_a_never_positive_background_logit_and_others_have_none():
    states = torch.tensor([[1, 0, -1], [-1, 1, 1]], dtype=torch.int8)
    assert logit_targets(states, 1).tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]  # difficult-only (0) is negative
    assert logit_targets(states, 0).tolist() == [[1, 0, 0], [0, 1, 1]]
    three = ClassList(("cat", "traffic light", "dog"))
    logits = torch.zeros(2, 3, requires_grad=True)
    build_loss("bce", three)(logits, states).backward()  # one logit per class: shapes agree
    assert logits.grad.shape == (2, 3)


def test_auto_pos_weight_is_negatives_over_positives_and_1_without_positives():
    positives = {name: 0 for name in VOC_CLASSES} | {"cat": 5, "dog": 20}
    weights = auto_pos_weight(positives, count=25, classes=VOC)
    assert weights.shape == (21,) and weights[0] == 1.0  # background
    assert weights[1 + VOC_CLASSES.index("cat")] == pytest.approx(4.0)
    assert weights[1 + VOC_CLASSES.index("dog")] == pytest.approx(0.25)
    assert weights[1 + VOC_CLASSES.index("sheep")] == 1.0
    own = auto_pos_weight({"a": 1, "b": 0}, count=4, classes=ClassList(("a", "b")))
    assert own.tolist() == [3.0, 1.0]  # no background weight without a background logit


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, "sgd", lr=1.0, momentum=0.9, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "cosine", total_updates=10, warmup_updates=2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_frozen_parameters_stay_out_of_the_optimizer():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, momentum=0.0, weight_decay=0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_optimizers_update_like_the_default_ones(name):
    """The trainer asks for fused kernels on CUDA; torch runs them on CPU too, so the same update is checked here."""
    steps = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = build_optimizer(model, name, lr=0.1, momentum=0.9, weight_decay=0.01, fused=fused)
        assert bool(optimizer.defaults.get("fused")) is fused
        for _ in range(3):
            model(torch.ones(2, 4)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        steps[fused] = model.weight.detach().clone()
    assert torch.allclose(steps[False], steps[True], atol=1e-6)


@pytest.mark.slow
def test_two_process_run_with_every_loss_and_optimization_flag(shards_dir, tmp_path):
    """One tiny DDP run through the whole recipe: it trains, tests, and records every flag."""
    out = tmp_path / "recipe"
    flags = ["--loss", "asl", "--label-smoothing", "0.1", "--head-lr-scale", "10", "--no-decay-norm-bias",
             "--weight-decay", "0.01", "--clip-grad-norm", "1", "--schedule", "step", "--lr-steps", "1"]
    run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, *flags]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and 0 <= summary["test_map"] <= 1
    settings = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert {k: settings[k] for k in ("loss", "label_smoothing", "head_lr_scale", "decay_norm_bias", "weight_decay",
                                     "clip_grad_norm", "schedule", "lr_steps", "lr_gamma", "asl_gamma_neg",
                                     "asl_gamma_pos", "asl_clip", "sync_bn")} == {
        "loss": "asl", "label_smoothing": 0.1, "head_lr_scale": 10.0, "decay_norm_bias": False,
        "weight_decay": 0.01, "clip_grad_norm": 1.0, "schedule": "step", "lr_steps": "1", "lr_gamma": 0.1,
        "asl_gamma_neg": 4.0, "asl_gamma_pos": 0.0, "asl_clip": 0.05, "sync_bn": False}
    # The body's lr at each epoch's start: TINY's 0.003, then x0.1 after epoch 1.
    assert [float(row["lr"]) for row in history(out)] == pytest.approx([0.003, 0.0003])
