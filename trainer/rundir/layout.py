"""Every name inside a run's --out folder, in one place (no other module spells them):

    config.yaml              the resolved settings and what made the run (rundir.provenance)
    history.csv              one row per finished epoch, rewritten after each epoch's checkpoint
    checkpoints/epoch_0003/  checkpoints (rundir.checkpoint); epoch_0004_step_00045/ mid-epoch
    best/                    the weights of the best-val-mAP epoch
    summary.json             the final test's figures; written last, so a run that has it is finished
    submission.csv           test scores of the --test-with model (docs/SPEC.md's format)
    per_class_ap.csv         test AP per class
    loss.png, map.png        the history as plots
    .lock                    held while a run trains in the folder (rundir.lock)
    stacks-rank<N>.txt       every thread's stack of a rank that passed --hang-timeout (faults.watchdog)
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG = "config.yaml"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
BEST = "best"
SUMMARY = "summary.json"
SUBMISSION = "submission.csv"
PER_CLASS_AP = "per_class_ap.csv"
LOSS_PLOT = "loss.png"
MAP_PLOT = "map.png"
LOCK = ".lock"
# Inside a checkpoint folder and best/:
STATE_FILE = "trainer_state.json"  # the RunState (checkpoints) or the best epoch and its val mAP (best/)
WEIGHTS_FILE = "model.safetensors"  # Accelerate's name for the model in save_state and save_model
SUMS_FILE = "checksums.json"  # sha256 of every other file of a checkpoint (rundir.sums)


class RunDir:
    """The paths of one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def stacks(self, rank: int) -> Path:
        return self.root / f"stacks-rank{rank}.txt"
