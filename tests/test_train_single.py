"""One-process trainer runs: SIGTERM and Ctrl-C stops + mid-epoch resume in bf16 on CPU, --debug, --test-with best (and --resume of the finished run), and
which checkpoint a resume picks."""

from __future__ import annotations

import json
import signal

import pytest

from trainer.rundir.checkpoint import RunState, checkpoint_dirs, latest_checkpoint
from trainer.rundir.layout import STATE_FILE
from trainer.rundir.resume import choose
from trainer.main import STOP_CHECK_UPDATES
from train_helpers import TINY, history, run, signal_when_paused, single


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_exits_0_and_resume_finishes_bf16_grad_accum(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "stopped.log"
    # batch 2: 12 batches per epoch; 2 batches per update: a stop may only happen where an update ends.
    # The signal arrives before epoch 2's first batch; the run stops at its first stop check.
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, "--batch-size", "2",
            "--grad-accum", "2", "--mixed-precision", "bf16"]
    proc = signal_when_paused(single(args, paused=("2:0", marker)), marker, log, signal.SIGTERM)
    assert proc.returncode == 0 and "stopped by SIGTERM" in log.read_text(), log.read_text()[-4000:]
    directory, state = latest_checkpoint(out)
    stopped_at = STOP_CHECK_UPDATES * 2
    assert (state.epoch, state.step_in_epoch, directory.name) == (1, stopped_at, f"epoch_0002_step_{stopped_at:05d}")
    assert not (out / "summary.json").exists()

    output = run(single([*args, "--resume"]))
    assert f"{state.step_in_epoch} batches into the next" in output
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixed_precision"] == "bf16" and summary["world_size"] == 1
    assert 0 <= summary["test_map"] <= 1
    # How close the run came to --hang-timeout (default 600 s): some wait was measured, all were short.
    assert 0 < summary["longest_wait"]["seconds"] < summary["longest_wait"]["hang_timeout"] == 600
    assert summary["longest_wait"]["what"]
    # wall_seconds spans both process lifetimes: the first one's time up to its checkpoint, then the resume's
    # (every epoch's time in history.csv lies inside them).
    assert 0 < state.wall_seconds < summary["wall_seconds"]
    assert summary["wall_seconds"] >= sum(float(r["seconds"]) for r in history(out))


@pytest.mark.slow
def test_debug_mode_prints_model_and_batch_and_finishes_with_periodic_checkpoints(shards_dir, tmp_path):
    out = tmp_path / "run"
    # --debug: 3 batches per epoch; every 5 updates is update 2 of epoch 2 -> one mid-epoch checkpoint
    output = run(single(["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, "--debug",
                         "--checkpoint-every-steps", "5", "--keep-checkpoints", "2"], module=True), timeout=120)
    assert "Linear" in output and "BatchNorm2d" in output  # models.describe's layer table
    assert "batch: images (4, 3, 32, 32) torch.uint8" in output and "logits (4, 21)" in output
    assert output.count("batch: images") == 1, "the debug printout belongs to the first epoch only"
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["debug"] is True
    assert "--debug: the test metrics and submission.csv cover only" in output
    # the periodic checkpoint, and only the newest 2 kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0002", "epoch_0002_step_00002"]


def test_bad_setting_exits_2_naming_the_flag_before_training(shards_dir, tmp_path):
    from trainer.main import main

    assert main(["--shards", str(shards_dir), "--out", str(tmp_path / "run"), "--model", "nope"]) == 2
    assert not (tmp_path / "run").exists()


def _fake_checkpoint(root, name: str, state: RunState | None) -> None:
    directory = root / "checkpoints" / name
    directory.mkdir(parents=True)
    if state is not None:
        (directory / STATE_FILE).write_text(json.dumps(state.__dict__))


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path, "epoch_0001", RunState(epoch=1))
    _fake_checkpoint(tmp_path, "epoch_0002", RunState(epoch=2))
    _fake_checkpoint(tmp_path, "epoch_0003_step_00004", RunState(epoch=2, step_in_epoch=4))
    _fake_checkpoint(tmp_path, ".tmp-epoch_0003", RunState(epoch=3))  # a save that was killed
    _fake_checkpoint(tmp_path, "epoch_0004", None)  # no state file: not a complete checkpoint
    listed = ["epoch_0001", "epoch_0002", "epoch_0003_step_00004", "epoch_0004"]  # by the position their names say
    assert [d.name for d, _ in checkpoint_dirs(tmp_path)] == listed
    assert latest_checkpoint(tmp_path)[1].order == (2, 4)  # epoch_0004's state does not read
    assert latest_checkpoint(tmp_path / "nothing") is None


@pytest.mark.slow
def test_test_with_best_writes_the_csv_from_the_best_val_epoch_and_resume_leaves_it(shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    # A network without BatchNorm or dropout and a learning rate too small to move any float32
    # weight: every epoch has the same val mAP, so the best (first strictly best) epoch is 1
    # while the final one is 2, on any machine.
    run(single(["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", "--debug", "--model", "basenet_nofc",
                "--optimizer", "sgd", "--momentum", "0", "--lr", "1e-12", "--batch-size", "4", "--augment", "none",
                "--test-frequency", "1", "--test-with", "best"]), timeout=180)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["best_val_epoch"], summary["epochs"]) == (1, 2)
    assert (summary["submission_model"], summary["submission_epoch"]) == ("best", 1)
    assert summary["best_model"]["epoch"] == 1 and summary["test_map"] == summary["best_model"]["test_map"]
    assert (out / "best" / "model.safetensors").is_file()

    # --resume of the finished run: one line, and not one file of the run changes.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from trainer.main import main
    capsys.readouterr()
    assert main(["--shards", str(shards_dir), "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"--resume: {out} is finished (2 epochs trained and tested" in said and "give --epochs above 2" in said
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert choose(out, 2).finished and choose(out, 3).finished is None  # a larger --epochs trains on


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_0(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "interrupted.log"
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "3", *TINY, "--batch-size", "2"]
    proc = signal_when_paused(single(args, paused=("2:0", marker)), marker, log, signal.SIGINT)
    text = log.read_text()
    assert proc.returncode == 0 and "stopped by SIGINT" in text and "Traceback" not in text, text[-4000:]
    assert latest_checkpoint(out)[1].order == (1, STOP_CHECK_UPDATES)  # 12 batches in epoch 2, stop at the first check


@pytest.mark.slow
def test_a_stop_on_the_epochs_last_update_checkpoints_the_epoch_and_resumes(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "stopped.log"
    # Batch 3: 8 batches = 8 updates per epoch, so the second stop check falls on the epoch's last
    # update. The signal arrives before batch 4 (after the first check): the run must stop at the
    # epoch's end with the epoch's own checkpoint, not write a "mid-epoch" one that resumes into nothing.
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, "--batch-size", "3"]
    proc = signal_when_paused(single(args, paused=(f"1:{STOP_CHECK_UPDATES}", marker)), marker, log, signal.SIGTERM)
    text = log.read_text()
    assert proc.returncode == 0 and "stopped by SIGTERM after the epoch's checkpoint" in text, text[-4000:]
    assert latest_checkpoint(out)[0].name == "epoch_0001"
    run(single([*args, "--resume"]))
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
