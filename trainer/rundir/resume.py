"""Where a --resume continues, decided once for every rank, and the run's files at its start.

The main process lists the checkpoints once, newest first, and takes the first intact one
(rundir.sums: every file present with the sha256 recorded when it was saved; the state file
readable). Each one it skips is said with the file and why; a checkpoint saved before checksums
existed is taken unverified, and said so. The choice is broadcast, so every rank loads the same
folder (a rank deciding for itself could see a file another rank is still reading, or race a slow
shared file system). Skipped checkpoints stay until the next save removes them (they lie beyond
the point the run continues from: rundir.checkpoint._prune).

A run is finished when that checkpoint is an epoch end at or past --epochs and summary.json was
written for that epoch (the final test ran): resuming it again would only redo the final test and
rewrite its files, so it is said in one line and nothing changes. A larger --epochs trains on; a
last checkpoint without its summary.json (killed during the final test) still runs that test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from shards.classes import ClassList
from trainer.faults.agreement import agree, main_decides
from trainer.faults.exits import BadInput
from trainer.rundir import outputs
from trainer.rundir.atomic import atomic_write_texts
from trainer.rundir.checkpoint import RunState, checkpoint_dirs, load_checkpoint, read_state
from trainer.rundir.layout import STATE_FILE, SUMMARY, SUMS_FILE, RunDir
from trainer.rundir.provenance import run_config_text
from trainer.rundir.sums import damage, has_sums


class NoIntactCheckpoint(BadInput):
    """--resume found checkpoints, and every one of them is damaged; the message names each and why."""


@dataclass
class ResumePoint:
    checkpoint: Path | None = None  # the newest intact checkpoint; None: the run starts fresh
    finished: str | None = None  # the line to say when the run is finished and --epochs does not extend it
    lines: list[str] = field(default_factory=list)  # checkpoints skipped as damaged, or taken unverified


def finished_line(run_dir: Path, state: RunState, epochs: int) -> str | None:
    """The line to say when `state` (the checkpoint a resume continues from) ends a finished run."""
    if state.step_in_epoch or state.epoch < epochs:
        return None
    try:
        summary = json.loads((RunDir(run_dir).summary).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("epochs") != state.epoch:  # a summary of an earlier, shorter run
        return None
    return (f"--resume: {run_dir} is finished ({state.epoch} epochs trained and tested, {SUMMARY} written): "
            f"nothing to do and nothing changed; give --epochs above {state.epoch} to train on")


def choose(run_dir: Path, epochs: int) -> ResumePoint:
    """The resume point of `run_dir` for a run of `epochs` epochs (one process; see the module doc)."""
    lines, skipped = [], []
    for directory, _ in reversed(checkpoint_dirs(run_dir)):
        state = read_state(directory)
        why = damage(directory) or (None if state is not None else f"{STATE_FILE}: missing or unreadable")
        if why is None:
            if not has_sums(directory):
                lines.append(f"--resume: {directory} has no {SUMS_FILE} (saved by an older version): "
                             "resuming from it unverified")
            return ResumePoint(directory, finished_line(run_dir, state, epochs), lines)
        skipped.append(f"{directory.name} ({why})")
        lines.append(f"--resume: skipped damaged checkpoint {directory}: {why}; the next checkpoint save removes it")
    if skipped:
        raise NoIntactCheckpoint(
            f"--resume: every checkpoint in {RunDir(run_dir).checkpoints} is damaged: {'; '.join(skipped)}; "
            f"restore one from a copy, or start a new --out")
    return ResumePoint(lines=lines)


def resume_point(accelerator: Accelerator, run_dir: str | Path, epochs: int) -> ResumePoint:
    """Collective: `choose` on the main process, the same answer on every rank. Raises
    NoIntactCheckpoint (main process) / PeerFailed (others) when every checkpoint is damaged."""
    return main_decides(accelerator, "choosing the checkpoint to resume from", lambda: choose(Path(run_dir), epochs))


def open_run(accelerator: Accelerator, run_dir: str | Path, checkpoint: Path | None, *, settings: dict,
             classes: ClassList, earlier: dict) -> RunState:
    """Collective. The state `checkpoint` holds (loaded into the prepared model, optimizer, scheduler
    and RNGs: rundir.checkpoint.load_checkpoint), or a fresh one; then config.yaml (`settings` and
    what made the run; `earlier`: the record a resume found) and history.csv with exactly the
    epochs that state holds, both or neither (a full disk changes nothing)."""
    run = RunDir(run_dir)
    state = RunState() if checkpoint is None else load_checkpoint(accelerator, checkpoint)
    error = None
    if accelerator.is_main_process:
        try:
            record = run_config_text(settings, world_size=accelerator.num_processes, device=str(accelerator.device),
                                     resumed_from=None if checkpoint is None else str(checkpoint), classes=classes,
                                     earlier=earlier)
            atomic_write_texts({run.config: record, run.history: outputs.history_text(state.history)})
        except Exception as err:  # OSError naming the file (rundir.atomic); every rank must hear of it
            error = err
    agree(accelerator, error, f"writing {run.config}")
    return state
