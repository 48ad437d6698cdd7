"""`--resume` of a run that is already finished: say so in one line and change nothing.

A run is finished when its newest checkpoint is an epoch end at or past --epochs and its
summary.json was written for that epoch (the final test ran). Resuming it again would only
redo the final evaluation and rewrite summary.json, submission.csv, the plots and config.yaml
(with a new `resumed_from`): nothing a user asks for with --resume. A larger --epochs trains
on as before; a checkpoint at the last epoch without its summary.json (killed during the
final test) still runs that test.
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer.rundir.checkpoint import latest_checkpoint

SUMMARY = "summary.json"


def finished_line(run_dir: Path, epochs: int) -> str | None:
    """The line to say when `run_dir` holds a finished run that `epochs` does not extend, else None."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    _, state = latest
    if state.step_in_epoch or state.epoch < epochs:
        return None
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("epochs") != state.epoch:  # a summary of an earlier, shorter run
        return None
    return (f"--resume: {run_dir} is finished ({state.epoch} epochs trained and tested, {SUMMARY} written): "
            f"nothing to do and nothing changed; give --epochs above {state.epoch} to train on")


def finished_run(accelerator: Accelerator, run_dir: Path, epochs: int) -> str | None:
    """Collective: finished_line as the main process reads it, the same on every rank."""
    line = finished_line(run_dir, epochs) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        line = broadcast_object_list([line])[0]
    return line
