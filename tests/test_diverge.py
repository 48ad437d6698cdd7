"""A diverging run ends in one line with status 2: the loss watch on its own (fast), then a real
2-process run at --lr 1e6 that must write no result file from the diverged weights (slow)."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from train_helpers import ROOT, TINY, ddp, env
from trainer.faults.exits import EXIT_BAD_INPUT, Identity, as_fault
from trainer.faults.signals import StopSignal
from trainer.loop.diverge import Diverged, LossWatch


@pytest.fixture
def accelerator() -> Accelerator:
    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)


def test_finite_losses_raise_no_stop_and_pass_the_check(accelerator, tmp_path):
    watch, stop = LossWatch(accelerator.device), StopSignal(signals=())
    total = torch.zeros(())
    for update in range(1, 9):
        total += 0.5
        watch.see(total, update, 0.1, accelerator)
    assert not stop.agreed(accelerator)
    watch.check(float(total), accelerator, str(tmp_path), epoch=1)  # no raise


def test_a_non_finite_loss_stops_the_agreement_and_names_its_update(accelerator, tmp_path):
    watch, stop = LossWatch(accelerator.device), StopSignal(signals=())
    total = torch.zeros(())
    for update, loss in enumerate([0.7, 3e12, math.inf, math.nan, 0.2], start=1):
        total += loss
        watch.see(total, update, 10.0 ** update, accelerator)
    assert stop.agreed(accelerator)  # the stop check every few updates carries it to every rank
    (tmp_path / "checkpoints" / "epoch_0001").mkdir(parents=True)
    with pytest.raises(Diverged) as raised:
        watch.check(float(total), accelerator, str(tmp_path), epoch=2)
    line = str(raised.value)
    assert "the train loss is inf in epoch 2, update 3 at lr 1e+03" in line  # the first bad update, its rate
    assert "no checkpoint was saved before it" in line  # epoch_0001 holds no state: not a checkpoint
    assert "--lr" in line and "--clip-grad-norm" in line
    fault = as_fault(raised.value, Identity(rank=0, world=2, main=True, host="h"))
    assert fault.status == EXIT_BAD_INPUT == 2 and fault.line == line
    assert as_fault(raised.value, Identity(rank=1, world=2, main=False, host="h")).line is None  # said once


@pytest.mark.slow
def test_a_diverging_ddp_run_ends_in_one_line_with_status_2(shards_dir, tmp_path):
    out = tmp_path / "run"
    # sgd at 1e6: finite losses for a few updates, then weights that are not; a checkpoint after every update.
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, "--optimizer", "sgd",
            "--lr", "1e6", "--checkpoint-every-steps", "1", "--tta", "flip"]
    done = subprocess.run(ddp(args, ours=True), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-5000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output[-5000:]
    assert re.search(r"error: the run diverged: .*epoch 1, update \d", errors[0]), errors[0]
    assert "lr 1e+06" in errors[0] and "--lr" in errors[0]
    named = re.search(r"the last intact checkpoint is (\S+?)\)", errors[0])
    assert named and (out / "checkpoints").is_dir(), errors[0]
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert named.group(1).endswith(saved[-1])  # the newest one on disk, saved before the divergence was found
    for result in ("summary.json", "submission.csv", "per_class_ap.csv", "best"):
        assert not (out / result).exists(), result
