"""--ema-decay: an average of the weights updated after every optimizer update, evaluated beside the
model, saved and resumed exactly, and selectable for best/ and submission.csv."""

import json
import shutil

import pytest
import torch
import yaml
from accelerate import Accelerator
from torch import nn

from train_helpers import TINY, ddp, history, run
from trainer.config import ConfigError, TrainConfig
from trainer.config.validate import validate
from trainer.recipe.ema import build_ema
from trainer.rundir.checkpoint import checkpoint_dirs


def test_the_average_follows_each_update_by_the_decay_and_zero_is_off():
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(3, 2)
    assert build_ema(accelerator, model, 0.0) is None
    ema = build_ema(accelerator, model, 0.9)
    start = model.weight.detach().clone()
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, 0.9 * start + 0.1 * (start + 1.0))
    assert ema in accelerator._custom_objects  # saved and restored with every checkpoint


@pytest.mark.parametrize("args, message", [({"ema_decay": 1.0}, "--ema-decay"), ({"test_with": "ema"}, "--test-with")])
def test_bad_ema_settings_are_refused_naming_the_flag(shards_dir, tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        validate(TrainConfig(shards=str(shards_dir), out=str(tmp_path / "run"), **args))


def _ema_weights(checkpoint) -> dict:
    [pickle] = checkpoint.glob("custom_checkpoint_*.pkl")
    return torch.load(pickle, weights_only=True)


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_ends_with_the_same_ema_weights_and_test_map(shards_dir, tmp_path):
    """Two processes; every update checkpointed. Resuming a copy from a mid-epoch checkpoint (what a kill
    there leaves) must end exactly where the uninterrupted run ended."""
    full, part = tmp_path / "full", tmp_path / "part"
    args = ["--epochs", "2", *TINY, "--ema-decay", "0.8", "--test-with", "ema", "--checkpoint-every-steps", "1",
            "--keep-checkpoints", "20"]
    log = run(ddp(["--shards", str(shards_dir), "--out", str(full), *args]))
    summary = json.loads((full / "summary.json").read_text())
    assert summary["submission_model"] == "ema" and summary["submission_weights"] == "ema", log[-3000:]
    assert summary["ema_model"]["decay"] == 0.8 and summary["test_map"] == summary["ema_model"]["test_map"]
    assert all(row["ema_val_map"] for row in history(full))  # every evaluation scored the average too

    shutil.copytree(full, part)
    checkpoints = [directory for directory, _ in checkpoint_dirs(part)]  # oldest first, by position
    middle = next(c for c in checkpoints if c.name.startswith("epoch_0002_step_"))
    for later in checkpoints[checkpoints.index(middle) + 1:]:
        shutil.rmtree(later)
    (part / "summary.json").unlink()
    resumed = run(ddp(["--shards", str(shards_dir), "--out", str(part), "--resume", *args]))
    assert f"resumedfrom{middle}" in "".join(resumed.split()), resumed[-3000:]  # the console may wrap the path

    ends = [d / "checkpoints" / "epoch_0002" for d in (full, part)]
    for (name, mine), theirs in zip(_ema_weights(ends[1]).items(), _ema_weights(ends[0]).values()):
        assert torch.equal(mine, theirs), name
    again = json.loads((part / "summary.json").read_text())
    assert again["test_map"] == summary["test_map"] and again["ema_model"] == summary["ema_model"]
    settings = yaml.safe_load((part / "config.yaml").read_text())["settings"]
    assert settings["ema_decay"] == 0.8 and settings["test_with"] == "ema"
    # best/ says whose weights it holds, and the run state agrees (its epoch, its val mAP: the better of the two)
    best = json.loads((full / "best" / "trainer_state.json").read_text())
    state = json.loads((full / "checkpoints" / "epoch_0002" / "trainer_state.json").read_text())
    assert (best.get("weights", "model"), best["epoch"]) == (state["best_weights"], state["best_epoch"])
    row = history(full)[best["epoch"] - 1]
    assert best["val_map"] == pytest.approx(max(float(row["val_map"]), float(row["ema_val_map"])))
