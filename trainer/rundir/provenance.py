"""config.yaml: the resolved settings of a run with what made it (git commit, versions, world size,
the class list it learns, and under SLURM the job id, node list and restart count of every start)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from shards.classes import VOC, ClassList, class_list

PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGES: tuple[str, ...] = ("torch", "torchvision", "accelerate", "webdataset")


def git_state(repo: Path = PROJECT_DIR) -> dict:
    """{'commit': sha or 'unknown' outside a git checkout, 'dirty': uncommitted changes (None if unknown)}."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=20).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def slurm_start(environ: Mapping[str, str] = os.environ) -> dict | None:
    """The scheduler's facts about this start ({job_id, nodes, restart_count}), None outside a SLURM job.
    A requeued job starts again with the same job id and SLURM_RESTART_COUNT one higher."""
    if "SLURM_JOB_ID" not in environ:
        return None
    return {"job_id": environ["SLURM_JOB_ID"], "nodes": environ.get("SLURM_JOB_NODELIST"),
            "restart_count": int(environ.get("SLURM_RESTART_COUNT") or 0),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_classes(record: Mapping) -> ClassList:
    """The class list a run's config.yaml records; VOC's for runs from before the key existed."""
    return class_list(record) if "classes" in record else VOC


def same_classes(run: ClassList, shards: ClassList, what: str, shards_dir: str | os.PathLike) -> str | None:
    """Why `what` (a run, its checkpoint or a submission, with class list `run`) cannot be used with the
    shards of `shards_dir`, or None when both lists score alike."""
    difference = run.difference(shards)
    if difference is None:
        return None
    return (f"{what} is for classes [{run.describe()}], the shards in {shards_dir} hold [{shards.describe()}]: "
            f"{difference}; use the shards it was made with")


def run_config_text(settings: dict, *, world_size: int, device: str, resumed_from: str | None,
                    classes: ClassList, earlier: dict | None = None) -> str:
    """RUN/config.yaml: the settings as resolved (defaults < YAML < CLI) with what made the run.
    Under SLURM, `slurm` lists every start of the run: those of the `earlier` record (the
    config.yaml a resume found), then this one."""
    starts = (earlier or {}).get("slurm") or []
    starts = starts if isinstance(starts, list) else []
    this_start = slurm_start()
    if this_start is not None:
        starts = [*starts, {**this_start, "resumed_from": resumed_from}]
    record = {
        "settings": settings,
        "world_size": world_size,
        **classes.to_manifest(),
        "device": device,
        "resumed_from": resumed_from,
        "git": git_state(),
        "versions": versions(),
    }
    if starts:
        record["slurm"] = starts
    return yaml.safe_dump(record, sort_keys=False)

