"""Checkpoints that survive a kill at any moment, and the best model.

Layout in the run directory:
    checkpoints/epoch_0003/             end of epoch 3
    checkpoints/epoch_0004_step_00045/  inside epoch 4, after its first 45 batches (SIGTERM or
                                        --checkpoint-every-steps)
    checkpoints/.tmp-<name>/            a save in progress: ignored on resume, deleted by the next save
    best/model.safetensors + best/trainer_state.json   weights of the best-val-mAP epoch

Each checkpoint is `accelerator.save_state` (model, optimizer, scheduler, grad scaler, every
process's RNG state) plus `trainer_state.json` (RunState). A save goes into `.tmp-<name>`
and is renamed into place only after every process has written its part and the state file
is complete, so the newest directory without the `.tmp-` prefix is always loadable.

Mid-epoch resume skips the batches the checkpoint had consumed: the reader's order is a pure
function of (seed, epoch, rank), so the skipped batches are exactly the ones already trained on
(they are decoded again and thrown away, which costs loader time but no training).

The run directory must be on a file system every process sees (as for any multi-node save).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from trainer.atomic import RESULT_FILE_MODE, atomic_write_text

STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"


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


def _read_state(directory: Path) -> RunState | None:
    try:
        record = json.loads((directory / STATE_FILE).read_text())
        return RunState(**{k: v for k, v in record.items() if k not in _DERIVED_KEYS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def checkpoints(run_dir: str | os.PathLike) -> list[tuple[Path, RunState]]:
    """Complete checkpoints, oldest first; partial saves (.tmp-*) and unreadable ones left out."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for directory in root.iterdir() if root.is_dir() else []:
        if directory.is_dir() and not directory.name.startswith(TMP_PREFIX):
            state = _read_state(directory)
            if state is not None:
                found.append((directory, state))
    return sorted(found, key=lambda item: item[1].order)


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, RunState] | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def _readable_by_group(directory: Path) -> None:
    # safetensors/torch.save leave some files 0600; a shared run directory must be readable by the group.
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(RESULT_FILE_MODE)


def save_checkpoint(accelerator: Accelerator, run_dir: str | os.PathLike, state: RunState, *, keep: int) -> Path:
    """Collective: every process calls it at the same point. Returns the final directory."""
    root = Path(run_dir) / "checkpoints"
    final = root / state.name()
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # main: weights/optimizer/scheduler; each process: its RNG file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps(dataclasses.asdict(state), indent=1))
        _readable_by_group(tmp)
        if final.exists():  # the same position saved again (resumed and stopped at once): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old, _ in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, directory: Path) -> RunState:
    """Restore model, optimizer, scheduler, scaler and RNG states; return the RunState."""
    accelerator.load_state(str(directory))
    state = _read_state(directory)
    if state is None:
        raise RuntimeError(f"{directory / STATE_FILE} is missing or unreadable; delete {directory} to resume from the one before")
    return state


def save_best(accelerator: Accelerator, model: torch.nn.Module, run_dir: str | os.PathLike, *, epoch: int,
              val_map: float) -> None:
    """Keep the weights of the best-val-mAP epoch in best/ (atomically, like checkpoints). Collective."""
    final, tmp = Path(run_dir) / "best", Path(run_dir) / f"{TMP_PREFIX}best"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    # The module under torch.compile's wrapper: its keys, not '_orig_mod.'-prefixed ones, so that
    # best/ loads into the plain model (predict, evaluate, a run without --compile).
    accelerator.save_model(accelerator.unwrap_model(model, keep_torch_compile=False), str(tmp))
    # Every process lists tmp inside save_model: renaming it before a slower one has done so
    # failed that one (FileNotFoundError: .tmp-best, seen in a 2-node SLURM run).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps({"epoch": epoch, "val_map": val_map}))
        _readable_by_group(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def load_best(accelerator: Accelerator, model: torch.nn.Module, run_dir: str | os.PathLike) -> None:
    """Load best/model.safetensors into the (unwrapped) model on every process."""
    weights = load_file(str(Path(run_dir) / "best" / "model.safetensors"))  # host; load_state_dict copies over
    accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(weights)
