"""The trainer under real 2-process DDP (gloo on CPU, launched with `accelerate launch`).

Six launches in all: an uninterrupted run; the same run killed with SIGKILL after its first
checkpoint, then resumed; the same run through ./launch.sh whose launcher is killed, then resumed;
and a run stopped with SIGTERM sent to every process, as SLURM does.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess

import numpy as np
import pytest
import yaml
from accelerate.state import AcceleratorState
from sklearn.metrics import average_precision_score

from shards.classes import VOC_CLASSES
from train_helpers import (LAUNCH, LAUNCH_SH_READY, ROOT, TINY, WORKERS, children, ddp, descendants, env, history,
                           kill_all, kill_launch, paused_entry, run, signal_when_paused, start, wait_until,
                           wait_until_gone)
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.rundir.lock import holder
from trainer.main import STOP_CHECK_UPDATES, main

pytestmark = pytest.mark.slow
EPOCHS = 2


def devkit_test_labels(voc_root) -> tuple[list[str], np.ndarray]:
    """Test ids and their 1/0/-1 states read straight from the devkit class files (not the shards)."""
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    ids = sorted(main.joinpath("test.txt").read_text().split())
    states = np.zeros((len(ids), len(VOC_CLASSES)), dtype=int)
    row = {image_id: i for i, image_id in enumerate(ids)}
    for c, name in enumerate(VOC_CLASSES):
        for line in main.joinpath(f"{name}_test.txt").read_text().splitlines():
            image_id, state = line.split()
            states[row[image_id], c] = int(state)
    return ids, states


@pytest.fixture(scope="module")
def full_run(shards_dir, tmp_path_factory):
    """An uninterrupted 2-process run (also logging to TensorBoard)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    log = run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", str(EPOCHS), *TINY,
                   "--log-with", "tensorboard"]))
    return out, log


def test_run_leaves_every_output_and_its_provenance(full_run):
    out, log = full_run
    for name in ("config.yaml", "history.csv", "summary.json", "per_class_ap.csv", "submission.csv",
                 "loss.png", "map.png", "best/model.safetensors"):
        assert (out / name).is_file(), f"{name} missing; log:\n{log[-3000:]}"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]
    assert list(out.rglob("events.out.tfevents*")), "--log-with tensorboard wrote no event file"

    config = yaml.safe_load((out / "config.yaml").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert config["git"]["commit"] == (head or "unknown")
    assert config["world_size"] == 2
    assert config["settings"]["epochs"] == EPOCHS and config["settings"]["model"] == "vocnet"
    assert {"torch", "torchvision", "accelerate", "webdataset", "python"} <= set(config["versions"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == EPOCHS and summary["mixed_precision"] == "no"
    assert summary["submission_model"] == "final" and summary["best_val_epoch"] in (1, 2)
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
    assert all(r["val_map"] and r["train_map"] for r in history(out))  # --test-frequency 1


def test_test_split_scored_exactly_once_and_map_matches_sklearn(full_run, voc_root):
    out, _ = full_run
    ids, states = devkit_test_labels(voc_root)
    with open(out / "submission.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", *VOC_CLASSES]
    # 17 test images over uneven shards (5,5,5,2) split between 2 ranks: each exactly once, sorted.
    assert [r[0] for r in rows[1:]] == ids and len(ids) % 2 == 1
    scores = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert ((scores >= 0) & (scores <= 1)).all()

    positives = states == 1  # difficult-only (0) counts as negative for the headline metric
    aps = {VOC_CLASSES[c]: average_precision_score(positives[:, c], scores[:, c])
           for c in range(len(VOC_CLASSES)) if positives[:, c].any()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_map"] == pytest.approx(np.mean(list(aps.values())), abs=1e-5)
    assert sorted(summary["missing_classes"]) == sorted(set(VOC_CLASSES) - set(aps))
    for name, ap in aps.items():
        assert summary["per_class_ap"][name] == pytest.approx(ap, abs=1e-5)


def test_sigkill_then_resume_gives_every_epoch_once_and_the_same_result(full_run, shards_dir, tmp_path, capsys):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "killed.log"
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", str(EPOCHS), *TINY]
    proc = start(ddp(args, paused=("2:0", marker)), log)  # rank 0 waits before epoch 2's first batch
    wait_until(marker.exists, proc, log)
    kill_launch(proc)
    # Killed before epoch 2 trained a batch: nothing of epoch 2 may be on disk.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    assert [int(r["epoch"]) for r in history(out)] == [1]
    # What a kill in the middle of a checkpoint save leaves behind: a partial temporary directory.
    stale = out / "checkpoints" / ".tmp-epoch_0002"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")

    resumed = run(ddp([*args, "--resume"]))
    assert "resumed from" in resumed and "epoch_0001" in resumed
    assert [int(r["epoch"]) for r in history(out)] == list(range(1, EPOCHS + 1))
    assert not stale.exists(), "the partial save was not cleaned up"
    assert yaml.safe_load((out / "config.yaml").read_text())["resumed_from"].endswith("epoch_0001")

    # Same seed, data order a function of (seed, epoch, rank), RNG restored: the same numbers.
    full_out, _ = full_run
    for mine, reference in zip(history(out), history(full_out)):
        assert float(mine["train_loss"]) == pytest.approx(float(reference["train_loss"]), rel=1e-3)
        assert float(mine["val_map"]) == pytest.approx(float(reference["val_map"]), abs=1e-3)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, full_out)]
    assert summaries[0]["test_map"] == pytest.approx(summaries[1]["test_map"], abs=1e-3)

    # Resuming a 2-process run in one process would load one rank's RNG and another data split.
    # (trainer.main.main in this process, as `python trainer/main.py` runs it: it refuses before it
    # writes anything; one interpreter start less.)
    capsys.readouterr()
    try:
        assert main(["--out", str(out), "--resume"]) == 2
    finally:
        AcceleratorState._reset_state(True)  # the refusal comes after the Accelerator was built
    assert "trained with 2 process(es); resume it with 2, not 1" in capsys.readouterr().err


@LAUNCH_SH_READY
def test_a_killed_launcher_leaves_no_rank_behind_and_the_resume_matches_a_run_never_stopped(full_run, shards_dir,
                                                                                           tmp_path):
    """kill -9 of ./launch.sh train and of its launcher mid-epoch. torch's launcher starts each rank in a
    session of its own: nothing but the ranks' own watch of their launcher stops them."""
    out, marker, release, log = tmp_path / "run", tmp_path / "paused", tmp_path / "release", tmp_path / "launch.log"
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", str(EPOCHS), *TINY]
    script = paused_entry(tmp_path, "1:1", marker, release)  # rank 0 waits before epoch 1's batch 1
    proc = subprocess.Popen([LAUNCH, "train", *args], cwd=tmp_path, env={**env(), "VOC_TRAIN_SCRIPT": str(script)},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    run_processes: list[int] = []
    try:
        wait_until(marker.exists, proc, log)
        [launcher] = children(proc.pid)
        run_processes = descendants(proc.pid)  # the launcher, its ranks and their loader workers
        assert len(children(launcher)) == 2, run_processes
        for pid in (proc.pid, launcher):
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        release.touch()  # rank 0 goes on: no stop signal reaches it, only its launcher's end
        print(f"\nlauncher killed -> every process of the run gone {wait_until_gone(run_processes, log):.1f} s after "
              "rank 0 went on")
    finally:
        kill_all(run_processes)
    text = log.read_text()
    saved = re.search(rf"the launcher \(pid {launcher}\) is gone: saved epoch (\d+)(, update (\d+))?; resume with "
                      r"--resume", text)
    assert saved and "Traceback" not in text, text[-5000:]
    _, state = latest_checkpoint(out)
    assert (state.epoch, state.step_in_epoch) == ((int(saved[1]), 0) if saved[3] is None else
                                                  (int(saved[1]) - 1, int(saved[3])))
    assert holder(out) is None, "the run's lock outlived its ranks"

    resumed = run([LAUNCH, "train", *args, "--resume"])  # not refused: the lock was released
    assert [int(r["epoch"]) for r in history(out)] == list(range(1, EPOCHS + 1)), resumed[-3000:]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, full_run[0])]
    assert summaries[0]["test_map"] == pytest.approx(summaries[1]["test_map"], abs=1e-3)


def test_sigterm_to_every_process_saves_and_stops_cleanly(shards_dir, tmp_path):
    """SLURM signals every process of a job step: launcher, ranks and their loader workers."""
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "stopped.log"
    # batch 2: 6 batches per process and epoch. Rank 0 waits before the first batch until the
    # signal is in; both ranks then stop together at the first stop check.
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", str(EPOCHS), *TINY, *WORKERS,
            "--batch-size", "2"]
    signal_when_paused(ddp(args, paused=("1:0", marker)), marker, log, signal.SIGTERM, every_process=True)
    text = log.read_text()
    assert "stopped by SIGTERM" in text, text[-4000:]
    assert "[rank" not in text, f"a rank failed instead of stopping:\n{text[-4000:]}"  # rank tracebacks
    directory, state = latest_checkpoint(out)
    assert (directory.name, state.step_in_epoch) == (f"epoch_0001_step_{STOP_CHECK_UPDATES:05d}", STOP_CHECK_UPDATES)
    assert not (out / "summary.json").exists()
