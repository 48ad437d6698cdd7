"""Training with `--loader device` under real 2-process DDP (gloo on CPU): train, evaluate, stop, resume.

Three launches: an uninterrupted run; the same run stopped by SIGTERM to every process in
epoch 1 and resumed. RandomResizedCrop runs on the device here (--augment crop_flip).
"""

from __future__ import annotations

import csv
import json
import re
import signal
import sys

import pytest

from train_helpers import TINY, ddp, history, run, signal_when_paused
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.main import STOP_CHECK_UPDATES

pytestmark = pytest.mark.slow
# batch 2: 24 train images over 2 processes give 6 batches per process and epoch, so a stop
# check (every STOP_CHECK_UPDATES updates) falls inside the epoch.
DEVICE = [*TINY, "--batch-size", "2", "--loader", "device", "--augment", "crop_flip", "--epochs", "2"]


def scores(path) -> dict[str, list[float]]:
    with open(path) as fh:
        rows = list(csv.reader(fh))
    return {row[0]: [float(v) for v in row[1:]] for row in rows[1:]}


@pytest.fixture(scope="module")
def device_run(shards_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("device") / "run"
    log = run(ddp(["--shards", str(shards_dir), "--out", str(out), *DEVICE]))
    return out, log


def test_device_loader_trains_and_scores_every_test_image_once(device_run, shards_dir):
    out, log = device_run
    # Decoded here, or mapped from the decoded cache that an earlier run on these shards wrote, or some
    # splits each way (other tests on these shards cache the splits they load).
    assert "loader: device (--loader device); decoded" in log or "loader: device (--loader device); mapped" in log, log
    # The start: line (trainer/loop/progress.py) says where the time to the first step went.
    assert re.search(r"start: [\d.]+ s from process start to the end of the first step \(interpreter and imports "
                     r"[\d.]+ s, Accelerator [\d.]+ s, model [\d.]+ s, data [\d.]+ s, prepare and resume [\d.]+ s, "
                     r"first step [\d.]+ s\)", log), log
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
    assert all(float(r["val_map"]) > 0 for r in history(out))
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    assert sorted(scores(out / "submission.csv")) == manifest["splits"]["test"]["ids"]
    assert summary["world_size"] == 2 and summary["test_map"] is not None


def test_the_streaming_loader_scores_a_device_trained_model_the_same(device_run, tmp_path):
    """Same weights, same scores: the device loader's eval view is the streaming loader's."""
    out, _ = device_run
    evaluated = tmp_path / "eval"
    run([sys.executable, "-m", "trainer.evaluate_run", "--run", str(out), "--weights", "final", "--split", "test",
         "--out", str(evaluated)])
    device_scores, stream_scores = scores(out / "submission.csv"), scores(evaluated / "submission.csv")
    assert device_scores.keys() == stream_scores.keys()
    for image_id, row in device_scores.items():
        assert row == pytest.approx(stream_scores[image_id], abs=1e-6), image_id


def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_run(device_run, shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "stopped.log"
    args = ["--shards", str(shards_dir), "--out", str(out), *DEVICE]
    signal_when_paused(ddp(args, paused=("1:0", marker)), marker, log, signal.SIGTERM, every_process=True)
    assert "stopped by SIGTERM" in log.read_text(), log.read_text()[-4000:]
    directory, state = latest_checkpoint(out)
    assert (directory.name, state.step_in_epoch) == (f"epoch_0001_step_{STOP_CHECK_UPDATES:05d}", STOP_CHECK_UPDATES)

    resumed = run(ddp([*args, "--resume"]))
    # The first run left the splits in the decoded cache: the resumed run maps them, and still
    # trains on the same pixels (the numbers below agree).
    assert "loader: device" in resumed and "from the decoded cache" in resumed and "resumed from" in resumed
    # Batch k of an epoch is a function of (seed, epoch, rank, k): the resumed epoch trains on
    # exactly the batches the uninterrupted run did, so the numbers agree.
    full_out, _ = device_run
    for mine, reference in zip(history(out), history(full_out), strict=True):
        assert float(mine["train_loss"]) == pytest.approx(float(reference["train_loss"]), rel=1e-4)
        assert float(mine["val_map"]) == pytest.approx(float(reference["val_map"]), abs=1e-4)
    mine, reference = scores(out / "submission.csv"), scores(full_out / "submission.csv")
    assert mine.keys() == reference.keys()
    assert [v for row in mine.values() for v in row] == pytest.approx([v for row in reference.values() for v in row],
                                                                      abs=1e-5)
