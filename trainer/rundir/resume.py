"""Which checkpoint a --resume continues from: the newest intact one, chosen once for every rank.

The main process checks the checkpoints newest first (trainer.rundir.sums: every file
present with the sha256 recorded when it was saved; the state file readable) and takes the
first that passes. Each one it skips is said in one line with the file and why; a
checkpoint saved before checksums existed is taken unverified, and said so. The choice is
broadcast through the Accelerator, so every rank loads the same folder (a rank deciding for
itself could see a file another rank is still reading, or race a slow shared file system).
Skipped checkpoints stay where they are until the next save removes them (they lie beyond the
point the run continues from: trainer.rundir.checkpoint._prune).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer.faults.agreement import agree
from trainer.faults.exits import BadInput
from trainer.rundir.checkpoint import STATE_FILE, checkpoint_dirs, read_state
from trainer.rundir.sums import SUMS_FILE, damage, has_sums


class NoIntactCheckpoint(BadInput):
    """--resume found checkpoints, and every one of them is damaged; the message names each and why."""


def _choose(run_dir: Path) -> tuple[str | None, list[str]]:
    """(the folder to resume from or None when there are no checkpoints, the lines to say)."""
    lines, skipped = [], []
    for directory, _ in reversed(checkpoint_dirs(run_dir)):
        why = damage(directory)
        if why is None and read_state(directory) is None:
            why = f"{STATE_FILE}: missing or unreadable"
        if why is None:
            if not has_sums(directory):
                lines.append(f"--resume: {directory} has no {SUMS_FILE} (saved by an older version): "
                             "resuming from it unverified")
            return str(directory), lines
        skipped.append(f"{directory.name} ({why})")
        lines.append(f"--resume: skipped damaged checkpoint {directory}: {why}; the next checkpoint save removes it")
    if skipped:
        raise NoIntactCheckpoint(
            f"--resume: every checkpoint in {run_dir / 'checkpoints'} is damaged: {'; '.join(skipped)}; "
            f"restore one from a copy, or start a new --out")
    return None, lines


def resume_point(accelerator: Accelerator, run_dir: str | Path, say: Callable[..., None]) -> Path | None:
    """Collective. The newest intact checkpoint of `run_dir` (the same on every rank), or None when
    it has none. Raises NoIntactCheckpoint (main process) / PeerFailed (others) when all are damaged."""
    choice, lines, error = None, [], None
    if accelerator.is_main_process:
        try:
            choice, lines = _choose(Path(run_dir))
        except Exception as err:  # NoIntactCheckpoint, or an unreadable folder: every rank must hear of it
            error = err
    agree(accelerator, error, "choosing the checkpoint to resume from")
    for line in lines:
        say(line)
    if accelerator.num_processes > 1:
        choice = broadcast_object_list([choice])[0]
    return None if choice is None else Path(choice)
