"""Planning a suite's experiments before anything runs, so that every problem shows at once.

A run with summary.json is finished and skipped; one whose trailing flags change its recipe is
refused (unless allowed); one with a complete checkpoint resumes (--resume); its command line is
then checked exactly as the trainer checks it (trainer.config.parse_config) and its model built,
which catches a missing pretrained weights file with the trainer's own message (where to put it),
a model that cannot take the image size, and settings a resume cannot change. The plan is the same
whether the runs then go to this machine's processes (trainer.suite.local) or to a SLURM job
array (trainer.suite.slurm).
"""

from __future__ import annotations

import json
from pathlib import Path

from models import PretrainedWeightsMissing
from shards.classes import class_list
from shards.manifest import load_manifest
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.config import parse_config
from trainer.config.yaml_files import read_run_record
from trainer.recipe.network import build_model
from trainer.rundir.provenance import PROJECT_DIR
from trainer.config import ConfigError, as_dict, flag
from trainer.suite.board import BAD_SETTINGS, FINISHED_BEFORE, NO_WEIGHTS, REFUSED, Job
from trainer.suite.catalog import RUNTIME_FIELDS, Run, describe_changes, recipe_changes, recipe_settings, shown_path
from trainer.rundir.layout import SUMMARY

TRAINER = PROJECT_DIR / "trainer" / "main.py"


def plan_job(run: Run, *, shards: str, runs: Path, flags: list[str], given: dict, allow_change: bool) -> Job:
    """The job for one run, in its first state: finished before, refused, no weights, bad settings or queued."""
    job = Job(run, runs / run.name)
    job.argv = ["--config", str(run.recipe), "--shards", shards, "--out", str(job.run_dir), *flags]
    summary_file = job.run_dir / SUMMARY
    if summary_file.is_file():
        job.state, job.summary = FINISHED_BEFORE, json.loads(summary_file.read_text())
        job.epochs = job.summary.get("epochs")
        job.note = _finished_differently(run, job.run_dir, given)
        job.brief = "trained with other settings than this call's (see above)" if job.note else ""
        return job
    changes = recipe_changes(run.recipe, given)
    if changes and not allow_change:
        flags_named = " ".join(flag(name) for name in changes)
        job.state, job.brief = REFUSED, f"flags change the recipe: {describe_changes(changes)}"
        job.note = (f"{flags_named} would change the recipe of {shown_path(run.recipe)} ({describe_changes(changes)}); "
                    "pass --allow-recipe-change to run it anyway (trainer.report lists what differs)")
        return job
    if latest_checkpoint(job.run_dir) is not None:
        job.argv.append("--resume")
        job.note = "resumes from its latest checkpoint"
    try:
        cfg = parse_config(job.argv)
        job.epochs = cfg.epochs
        # the trainer's own check of model, weights and image size for the shards' classes (then dropped)
        build_model(cfg, class_list(load_manifest(cfg.shards)))
    except ConfigError as err:
        missing = isinstance(err.__cause__, PretrainedWeightsMissing)
        job.state, job.note = (NO_WEIGHTS if missing else BAD_SETTINGS), str(err)
        job.brief = "the pretrained weights file is not on this machine" if missing else ""
    return job


def _finished_differently(run: Run, run_dir: Path, given: dict) -> str:
    """A note when a finished run was trained with other settings than this call would use."""
    try:
        recorded = read_run_record(run_dir).get("settings") or {}
    except ConfigError:
        return ""
    now = {**as_dict(recipe_settings(run.recipe)), **given}
    differ = {k: (recorded.get(k), v) for k, v in now.items() if k not in RUNTIME_FIELDS and recorded.get(k) != v}
    if not differ:
        return ""
    said = ", ".join(f"{k} {old} (this call: {new})" for k, (old, new) in differ.items())
    return f"skipped; it was trained with {said}: delete {run_dir} to train it again"


def last_error(log: Path) -> str:
    """The trainer's `error: ...` line, else the last line of a traceback, else nothing."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines[-1:] or ["no output"])[-1]
