"""config.yaml: the resolved settings of a run with what made it (git commit, versions, world size)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from trainer.atomic import atomic_write_text

PROJECT_DIR = Path(__file__).resolve().parent.parent
RUN_CONFIG = "config.yaml"  # RUN/config.yaml: {settings: {...}, world_size, device, resumed_from, git, versions}
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


def write_run_config(run_dir: str | os.PathLike, settings: dict, *, world_size: int, device: str,
                     resumed_from: str | None) -> None:
    """Write RUN/config.yaml: settings as resolved (defaults < YAML < CLI) plus provenance."""
    record = {
        "settings": settings,
        "world_size": world_size,
        "device": device,
        "resumed_from": resumed_from,
        "git": git_state(),
        "versions": versions(),
    }
    atomic_write_text(Path(run_dir) / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))

