"""Checkpoints that survive a kill at any moment, and the best model.

Layout in the run directory:
    checkpoints/epoch_0003/             end of epoch 3
    checkpoints/epoch_0004_step_00045/  inside epoch 4, after its first 45 batches (SIGTERM or
                                        --checkpoint-every-steps)
    checkpoints/.tmp-<name>/            a save in progress: ignored on resume, deleted by the next save
    best/model.safetensors + best/trainer_state.json   weights of the best-val-mAP epoch

Each checkpoint is `accelerator.save_state` (model, optimizer, scheduler, grad scaler, every
process's RNG state) plus `trainer_state.json` (RunState) plus `checksums.json` (the sha256 of
every other file, written last: trainer/rundir/resume.py checks them on --resume). A save goes
into `.tmp-<name>` and is renamed into place only after every process has written its part and
the state and sums are complete, so a directory without the `.tmp-` prefix was complete when saved.

A save that fails (full disk, read-only mount, I/O error; on any process) removes its `.tmp-`
folder at once, leaves the previous checkpoints and best/ as they were, and raises on every
process (trainer.faults.agreement): the main process an OSError with the errno and the checkpoint's
path (trainer.faults.disk_errors), the others PeerFailed. None is left waiting in a barrier.

Mid-epoch resume skips the batches the checkpoint had consumed: the reader's order is a pure
function of (seed, epoch, rank), so the skipped batches are exactly the ones already trained on
(they are decoded again and thrown away, which costs loader time but no training).

The run directory must be on a file system every process sees (as for any multi-node save).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from trainer.faults.agreement import agree
from trainer.faults.exits import BadInput
from trainer.rundir.atomic import RESULT_FILE_MODE, atomic_write_text
from trainer.rundir.layout import STATE_FILE, WEIGHTS_FILE, RunDir
from trainer.rundir.sums import write_sums
from trainer.faults.disk_errors import WRITE_ERRORS, as_os_error

TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"epoch_(\d{4,})(?:_step_(\d{5,}))?")


@dataclass
class RunState:
    """Where training stands; everything the loop needs beyond the Accelerate state."""

    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # batches of epoch `epoch + 1` already trained on (0 at an epoch end)
    # The partial epoch's batch and image counts follow from step_in_epoch (train batches are
    # full and every process trains the same number): only sums that cannot be derived are kept.
    partial_loss_sum: float = 0.0  # sum over processes of their per-batch losses in that partial epoch
    partial_seconds: float = 0.0  # wall seconds of training already spent on the partial epoch
    # Wall seconds of the run up to this checkpoint, summed over its process lifetimes (a resume
    # adds its own; work lost after a checkpoint by a kill is not counted).
    wall_seconds: float = 0.0
    best_val_map: float | None = None
    best_epoch: int | None = None
    best_weights: str = "model"  # what best/ holds: the model's weights or (--ema-decay) their average
    history: list[dict] = field(default_factory=list)  # history.csv rows of the finished epochs

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.step_in_epoch)

    def name(self) -> str:
        if self.step_in_epoch == 0:
            return f"epoch_{self.epoch:04d}"
        return f"epoch_{self.epoch + 1:04d}_step_{self.step_in_epoch:05d}"


# Written by earlier versions and derivable from step_in_epoch: read and dropped, so their checkpoints still resume.
_DERIVED_KEYS = ("partial_batches", "partial_images")


def read_state(directory: Path) -> RunState | None:
    try:
        record = json.loads((directory / STATE_FILE).read_text())
        return RunState(**{k: v for k, v in record.items() if k not in _DERIVED_KEYS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[tuple[Path, tuple[int, int]]]:
    """Every checkpoint folder, whether or not it reads, oldest first by the position its name
    says (RunState.name): the one listing of checkpoints/. Partial saves (.tmp-*) and other names
    are left out."""
    root = RunDir(run_dir).checkpoints
    found = []
    for directory in root.iterdir() if root.is_dir() else []:
        match = _NAME.fullmatch(directory.name)
        if match and directory.is_dir():
            epoch, step = int(match[1]), int(match[2] or 0)
            found.append((directory, (epoch - 1, step) if step else (epoch, 0)))
    return sorted(found, key=lambda item: item[1])


def latest_checkpoint(run_dir: str | os.PathLike, *, epoch_end: bool = False) -> tuple[Path, RunState] | None:
    """The newest checkpoint whose state reads (only end-of-epoch ones with epoch_end), or None."""
    for directory, (_, step) in reversed(checkpoint_dirs(run_dir)):
        state = read_state(directory) if not (epoch_end and step) else None
        if state is not None:
            return directory, state
    return None


def _readable_by_group(directory: Path) -> None:
    # safetensors/torch.save leave some files 0600; a shared run directory must be readable by the group.
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(RESULT_FILE_MODE)


def _failure(err: BaseException, path: Path) -> BaseException:
    """What a rank raises for a failed part of a save: a write error as OSError naming `path`
    (diagnosed now, while the partial files still hold the space), anything else (a bug) as is."""
    if not isinstance(err, WRITE_ERRORS):
        return err
    failure = as_os_error(err, path)
    failure.__cause__ = err
    return failure


def _part(write: Callable[[], None], path: Path) -> BaseException | None:
    try:
        write()
    except Exception as err:
        return _failure(err, path)
    return None


def _agree_or_clean(accelerator: Accelerator, error: BaseException | None, what: str, tmp: Path) -> None:
    """agree(); on a failure anywhere the main process removes `tmp` (every rank has stopped writing
    into it once the agreement is reached) before every rank raises."""
    try:
        agree(accelerator, error, what)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clear_stale(root: Path, final: Path) -> BaseException | None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as err:
        return _failure(err, final)
    return None


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename tmp onto final; a final that exists (the same position saved again: resumed and
    stopped at once) is moved aside first and only removed once the new one is in place."""
    old = final.with_name(f"{TMP_PREFIX}old-{final.name}")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _prune(root: Path, saved: tuple[int, int], keep: int) -> None:
    """Keep the `keep` newest checkpoints up to the one just saved. Any beyond it are from before a
    resume that skipped them as damaged (trainer/rundir/resume.py): superseded, so removed too."""
    listed = checkpoint_dirs(root.parent)
    older = [d for d, order in listed if order <= saved]
    newer = [d for d, order in listed if order > saved]
    for old in older[:-keep] + newer:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(accelerator: Accelerator, run_dir: str | os.PathLike, state: RunState, *, keep: int) -> Path:
    """Collective: every process calls it at the same point. Returns the final directory; raises
    OSError (main process) / PeerFailed (others) when the save failed anywhere (module docstring)."""
    root = RunDir(run_dir).checkpoints
    final = root / state.name()
    tmp = root / f"{TMP_PREFIX}{final.name}"
    what = f"saving checkpoint {final}"
    error = _clear_stale(root, final) if accelerator.is_main_process else None
    agree(accelerator, error, what)
    # main: weights/optimizer/scheduler; each process: its RNG file
    error = _part(lambda: accelerator.save_state(str(tmp)), final)
    _agree_or_clean(accelerator, error, what, tmp)
    error = None
    if accelerator.is_main_process:
        def finish() -> None:
            atomic_write_text(tmp / STATE_FILE, json.dumps(dataclasses.asdict(state), indent=1))
            write_sums(tmp)  # last: it covers every other file
            _readable_by_group(tmp)
            _move_into_place(tmp, final)
        error = _part(finish, final)
        if error is None:
            _prune(root, state.order, keep)
    _agree_or_clean(accelerator, error, what, tmp)
    return final


class DamagedCheckpoint(BadInput):
    """A checkpoint that passed the checks of trainer/rundir/resume.py but does not load."""


def load_checkpoint(accelerator: Accelerator, directory: Path) -> RunState:
    """Collective. Restore model, optimizer, scheduler, scaler and RNG states; return the RunState.
    Raises on every rank when any fails (main: DamagedCheckpoint naming the directory, or the
    OSError of a failed read; others: PeerFailed)."""
    error, state = None, None
    try:
        accelerator.load_state(str(directory))
        state = read_state(directory)
        if state is None:
            raise DamagedCheckpoint(f"{directory / STATE_FILE} is missing or unreadable")
    except OSError as err:
        error = err
    except Exception as err:
        error = DamagedCheckpoint(f"checkpoint {directory} does not load ({type(err).__name__}: {err}); "
                                  f"delete it to resume from the one before")
        error.__cause__ = err
    agree(accelerator, error, f"loading checkpoint {directory}")
    return state


def save_best(accelerator: Accelerator, model: torch.nn.Module, run_dir: str | os.PathLike, *, epoch: int,
              val_map: float, weights: str = "model") -> None:
    """Keep the weights of the best-val-mAP epoch in best/ (atomically, like checkpoints). Collective;
    a failed save leaves the previous best/ and raises like save_checkpoint."""
    final = RunDir(run_dir).best
    tmp = final.with_name(TMP_PREFIX + final.name)
    what = f"saving the best model to {final}"
    error = _part(lambda: shutil.rmtree(tmp, ignore_errors=True), final) if accelerator.is_main_process else None
    agree(accelerator, error, what)
    # The module under torch.compile's wrapper: its keys, not '_orig_mod.'-prefixed ones, so that
    # best/ loads into the plain model (predict, evaluate, a run without --compile).
    error = _part(lambda: accelerator.save_model(accelerator.unwrap_model(model, keep_torch_compile=False), str(tmp)),
                  final)
    # Every process lists tmp inside save_model: renaming it before a slower one has done so
    # failed that one (FileNotFoundError: .tmp-best, seen in a 2-node SLURM run). The agreement waits.
    _agree_or_clean(accelerator, error, what, tmp)
    error = None
    if accelerator.is_main_process:
        def finish() -> None:
            record = {"epoch": epoch, "val_map": val_map, **({"weights": weights} if weights != "model" else {})}
            atomic_write_text(tmp / STATE_FILE, json.dumps(record))
            _readable_by_group(tmp)
            _move_into_place(tmp, final)
        error = _part(finish, final)
    _agree_or_clean(accelerator, error, what, tmp)


def load_best(accelerator: Accelerator, model: torch.nn.Module, run_dir: str | os.PathLike) -> None:
    """Load best/model.safetensors into the (unwrapped) model on every process."""
    weights = load_file(str(RunDir(run_dir).best / WEIGHTS_FILE))  # host; load_state_dict copies over
    accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(weights)
