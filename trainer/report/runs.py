"""What a run directory says about its run, read from its files alone (trainer.suite, trainer.report).

A run is finished when it has summary.json (written last, atomically, by trainer.loop.final_test);
unfinished when it has a complete checkpoint (it resumes from there); started when only its
config.yaml or log is there (killed before its first checkpoint); missing when there is no
directory.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from trainer.rundir.checkpoint import latest_checkpoint
from trainer.config.yaml_files import read_run_record
from trainer.config import ConfigError
from trainer.rundir.layout import CONFIG, HISTORY, SUMMARY

FINISHED, UNFINISHED, STARTED, MISSING = "finished", "unfinished", "started", "missing"


@dataclass
class RunFiles:
    name: str
    path: Path
    state: str  # FINISHED, UNFINISHED, STARTED or MISSING
    summary: dict | None = None
    record: dict = field(default_factory=dict)  # config.yaml: settings, world_size, device, git, versions
    history: list[dict] = field(default_factory=list)  # history.csv rows (strings)
    problem: str | None = None  # a file that could not be read, said in one line
    label: str = ""  # how tables name it when two compared runs share a directory name (parent/name)

    @property
    def shown(self) -> str:
        return self.label or self.name

    @property
    def settings(self) -> dict:
        return self.record.get("settings") or {}

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def epochs(self) -> int | None:
        """Epochs the run was set to train."""
        return (self.summary or {}).get("epochs") or self.settings.get("epochs")

    def finished_at(self) -> str | None:
        """When summary.json was written (its file time, UTC): the run's date."""
        path = self.path / SUMMARY
        if not path.is_file():
            return None
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def status(self) -> str:
        """One phrase: 'finished', 'unfinished: 3 of 20 epochs', 'missing: not run', ..."""
        if self.state == FINISHED:
            return FINISHED
        if self.state == MISSING:
            return "missing: not run"
        of = f" of {self.epochs}" if self.epochs else ""
        return f"{self.state}: {self.epochs_done}{of} epochs done"


def read_run(path: str | Path, name: str | None = None) -> RunFiles:
    """Everything trainer.report needs from one run directory; never raises for a bad file (`problem`)."""
    path = Path(path)
    run = RunFiles(name or path.name, path, MISSING)
    if not path.is_dir():
        return run
    problems = []
    try:
        run.record = read_run_record(path)
    except ConfigError as err:
        problems.append(str(err).removeprefix("--resume: "))
    if (path / HISTORY).is_file():
        with open(path / HISTORY, newline="") as f:
            run.history = list(csv.DictReader(f))
    if (path / SUMMARY).is_file():
        try:
            run.summary = json.loads((path / SUMMARY).read_text())
        except ValueError as err:
            problems.append(f"{path / 'summary.json'}: not JSON ({err})")
    run.problem = "; ".join(problems) or None
    if run.summary is not None:
        run.state = FINISHED
    elif latest_checkpoint(path) is not None:
        run.state = UNFINISHED
    else:
        run.state = STARTED
    return run


def is_run_dir(path: str | Path) -> bool:
    """A directory the trainer wrote into (its config.yaml, history or summary is there)."""
    path = Path(path)
    return any((path / name).is_file() for name in (CONFIG, SUMMARY, HISTORY))


def runs_under(root: str | Path) -> list[Path]:
    """The run directories directly under `root`, by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and is_run_dir(p))


def class_names(runs: list[RunFiles]) -> list[str]:
    """The classes of the runs' per-class test AP, in their summaries' order (the class list's)."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys((run.summary or {}).get("per_class_ap") or {}))
    return list(names)
