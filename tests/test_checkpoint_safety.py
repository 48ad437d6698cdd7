"""A save into a full disk fails as one OSError and loses nothing; a damaged
newest checkpoint is skipped on --resume, named, and the one before it resumes. Real files on a
real small tmpfs (root only), real Accelerators, the trainer's own functions."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from shards.classes import VOC
from trainer.rundir import checkpoint
from trainer.rundir.checkpoint import RunState
from trainer.rundir.sums import SUMS_FILE, damage
from trainer.config import TrainConfig, as_dict
from trainer.rundir.resume import NoIntactCheckpoint, open_run, resume_point


@pytest.fixture
def small_disk(tmp_path):
    """A 5 MiB tmpfs: room for one checkpoint of `_trained()` (about 3 MB), not for two."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _trained() -> tuple[Accelerator, torch.nn.Module, torch.optim.Optimizer]:
    """1 MB of weights and 2 MB of Adam state after one step (so torch.save writes the second file)."""
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model, optimizer = torch.nn.Linear(500, 500), None
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.ones(2, 500)).sum().backward()
    optimizer.step()
    return accelerator, model, optimizer


def _free(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def _resume(accelerator: Accelerator, run: Path, said: list[str]) -> Path | None:
    """The checkpoint a --resume of `run` continues from; the lines it says go into `said`."""
    point = resume_point(accelerator, run, epochs=20)
    said.extend(point.lines)
    return point.checkpoint


def test_a_save_into_a_full_disk_raises_enospc_naming_it_and_loses_nothing(small_disk, shards_dir):
    accelerator, model, _ = _trained()
    run = small_disk / "run"
    first = checkpoint.save_checkpoint(accelerator, run, RunState(epoch=1), keep=3)
    checkpoint.save_best(accelerator, model, run, epoch=1, val_map=0.5)
    free_before = _free(small_disk)
    assert free_before < 3_000_000  # the next checkpoint cannot fit

    with pytest.raises(OSError) as caught:
        checkpoint.save_checkpoint(accelerator, run, RunState(epoch=2), keep=3)
    err = caught.value
    assert err.errno == errno.ENOSPC and err.filename == str(run / "checkpoints" / "epoch_0002")
    assert "No space left on device" in str(err) and "epoch_0002" in str(err)
    assert err.__cause__ is not None  # the library's own error, chained
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0001"]  # no .tmp-* left
    assert _free(small_disk) == free_before  # and its space is back at once (no file kept open)

    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free_before - 400_000))  # room left for less than best/'s 1 MB
    with pytest.raises(OSError) as caught:  # best/ as well: the previous one stays
        torch.nn.init.zeros_(model.weight)
        checkpoint.save_best(accelerator, model, run, epoch=2, val_map=0.9)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(run / "best")
    assert sorted(p.name for p in run.iterdir()) == ["best", "checkpoints"]  # no .tmp-best left
    assert '"epoch": 1' in (run / "best" / "trainer_state.json").read_text()

    # --resume while the disk is still full: the OSError, and nothing written (no config.yaml, no history.csv)
    with pytest.raises(OSError):
        with open(filler, "ab") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    cfg = TrainConfig(shards=str(shards_dir), out=str(run), resume=True)
    with pytest.raises(OSError) as caught:
        open_run(accelerator, run, resume_point(accelerator, run, cfg.epochs).checkpoint, settings=as_dict(cfg), classes=VOC,
                 earlier={})
    assert caught.value.errno == errno.ENOSPC and "config.yaml" in str(caught.value)
    assert sorted(p.name for p in run.iterdir()) == ["best", "checkpoints"]

    # Space freed: the previous checkpoint is intact, verified, and the run resumes from it.
    filler.unlink()
    assert damage(first) is None
    point = resume_point(accelerator, run, cfg.epochs)
    state = open_run(accelerator, run, point.checkpoint, settings=as_dict(cfg), classes=VOC,
                 earlier={})
    assert point.checkpoint == first and state.epoch == 1
    assert (run / "config.yaml").is_file() and (run / "history.csv").is_file()


def _two_checkpoints(run: Path) -> tuple[Accelerator, torch.nn.Module, Path, Path]:
    accelerator, model, _ = _trained()
    older = checkpoint.save_checkpoint(accelerator, run, RunState(epoch=1), keep=3)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.nn.init.ones_(model.weight)
    newer = checkpoint.save_checkpoint(accelerator, run, RunState(epoch=2), keep=3)
    model.load_state_dict(weights)  # what epoch 1 saved; the resume must bring epoch 1's weights back
    torch.nn.init.zeros_(model.weight)
    return accelerator, model, older, newer, weights


def test_a_truncated_newest_checkpoint_is_skipped_and_named(tmp_path):
    accelerator, model, older, newer, weights = _two_checkpoints(tmp_path)
    weights_file = newer / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])  # the disk filled up under a copy
    said: list[str] = []
    assert _resume(accelerator, tmp_path, said) == older
    assert said == [f"--resume: skipped damaged checkpoint {newer}: model.safetensors: sha256 differs from "
                    f"{SUMS_FILE} (truncated or changed since it was saved); the next checkpoint save removes it"]
    assert checkpoint.load_checkpoint(accelerator, older).epoch == 1
    assert torch.equal(model.weight, weights["weight"])
    # The run goes on from epoch 1: its next save supersedes the damaged epoch 2 (removed), not the good one.
    checkpoint.save_checkpoint(accelerator, tmp_path, RunState(epoch=1, step_in_epoch=3), keep=1)
    assert [d.name for d, _ in checkpoint.checkpoint_dirs(tmp_path)] == ["epoch_0002_step_00003"]


def test_missing_file_or_unreadable_state_is_skipped_and_all_damaged_is_one_error(tmp_path):
    accelerator, _, older, newer, _ = _two_checkpoints(tmp_path)
    (newer / "optimizer.bin").unlink()
    said: list[str] = []
    assert _resume(accelerator, tmp_path, said) == older
    assert said and "optimizer.bin: missing" in said[0]
    (older / "trainer_state.json").write_text("{not json")
    with pytest.raises(NoIntactCheckpoint) as caught:
        _resume(accelerator, tmp_path, said)
    text = str(caught.value)
    assert "epoch_0002 (optimizer.bin: missing)" in text and "epoch_0001 (trainer_state.json: sha256 differs" in text


def test_a_checkpoint_saved_before_checksums_still_resumes_unverified(tmp_path):
    accelerator, _, older, newer, _ = _two_checkpoints(tmp_path)
    for directory in (older, newer):
        (directory / SUMS_FILE).unlink()  # as saved by the version before this one
    said: list[str] = []
    assert _resume(accelerator, tmp_path, said) == newer
    assert said == [f"--resume: {newer} has no {SUMS_FILE} (saved by an older version): resuming from it unverified"]
    assert checkpoint.load_checkpoint(accelerator, newer).epoch == 2
    # Without sums a truncated weights file is still caught by its header, and the older one is used.
    (newer / "model.safetensors").write_bytes((newer / "model.safetensors").read_bytes()[:1000])
    said: list[str] = []
    assert _resume(accelerator, tmp_path, said) == older
    assert "skipped damaged checkpoint" in said[0] and "model.safetensors" in said[0]
