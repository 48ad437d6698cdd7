"""`python -m trainer.suite SUITE --runs RUNS --status`: where each run of a suite stands.

Read from the run directories (summary.json, history.csv, checkpoints, the run lock, the logs)
and, when the suite went to SLURM, from the scheduler's queue (trainer.suite.slurm): done,
queued, running, requeued, stopped (a checkpoint to resume from), failed with its error line,
or not started. Nothing is written, nothing is started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trainer.rundir import lock as run_lock
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.config.yaml_files import read_run_record
from trainer.config import ConfigError
from trainer.suite.catalog import Suite
from trainer.suite.local import ENDED_MARK
from trainer.suite.slurm import RECORD_DIR, RECORDS, Task, newest_tasks, requeued
from trainer.rundir.layout import CONFIG, HISTORY, SUMMARY

_STYLE = {"done": "green", "running": "cyan", "queued": "dim", "requeued": "cyan", "stopped": "yellow",
          "not started": "yellow", "failed": "red"}
_RUNNING = ("RUNNING", "COMPLETING", "CONFIGURING")


@dataclass
class RunStatus:
    name: str
    state: str
    epochs: str  # "done/planned"
    detail: str


def suite_status(suite: Suite, runs: Path) -> list[RunStatus]:
    """One RunStatus per run of the suite, in the suite's order."""
    tasks = newest_tasks(runs) if (runs / RECORD_DIR / RECORDS).is_file() else {}
    return [_status(run.name, runs / run.name, tasks.get(run.name)) for run in suite.runs]


def _status(name: str, run_dir: Path, task: Task | None) -> RunStatus:
    epochs = _epochs(run_dir)
    summary = run_dir / SUMMARY
    if summary.is_file():
        done = json.loads(summary.read_text())
        mean_ap = done.get("test_map")
        result = "test labels hidden" if mean_ap is None else f"test mAP {mean_ap:.4f}"
        return RunStatus(name, "done", epochs, result)
    if task is not None and task.state is not None:
        where = f"task {task.name}, log {task.log}"
        if task.state in _RUNNING:
            return RunStatus(name, "running", epochs, where)
        if task.state == "PENDING":
            state = "requeued" if requeued(task, run_dir) else "queued"
            return RunStatus(name, state, epochs, f"{where} ({task.reason})" if task.reason else where)
        return RunStatus(name, task.state.lower(), epochs, where)
    holder = run_lock.holder(run_dir)
    if holder is not None:
        return RunStatus(name, "running", epochs, holder)
    log = task.log if task is not None else run_dir / "suite.log"
    error = _error_of_last_start(log)
    if error:
        where = f"task {task.name}, " if task is not None else ""
        return RunStatus(name, "failed", epochs, f"{error} ({where}log {log})")
    if latest_checkpoint(run_dir) is not None:
        return RunStatus(name, "stopped", epochs, "a checkpoint to resume from: the next call resumes it")
    return RunStatus(name, "not started", epochs, "")


def _error_of_last_start(log: Path) -> str:
    """Why the log's last start failed, else '' (a log is appended to by every start)."""
    if not log.is_file():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    # This machine's suite marks each start and how it ended (trainer.suite.local); a task's log
    # has the batch script's `batch: job ...` line at each start.
    starts = [i for i, line in enumerate(lines) if line.startswith("=== trainer.suite") or "batch: job " in line]
    last = lines[starts[-1]] if starts else ""
    if f" {ENDED_MARK} " in last:
        state_and_why = last.split(f" {ENDED_MARK} ", 1)[1]
        return state_and_why.split(": ", 1)[1] if state_and_why.startswith("failed: ") else ""
    # The last start's lines only. "error:" anywhere in the line: srun prefixes a node's output with "0: ".
    errors = [line.strip() for line in lines[(starts[-1] if starts else 0):] if "error:" in line]
    return errors[-1] if errors else ""


def _epochs(run_dir: Path) -> str:
    history = run_dir / HISTORY
    done = max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0
    try:
        planned = (read_run_record(run_dir).get("settings") or {}).get("epochs") if (run_dir / CONFIG).is_file() \
            else None
    except ConfigError:
        planned = None
    return f"{done}/{planned}" if planned else str(done)


def print_status(suite: Suite, runs: Path, console: Console) -> int:
    """The table; exit status 0 when every run is done, else 1 (scripts can wait on it)."""
    rows = suite_status(suite, runs)
    table = Table(title=f"suite {suite.name}: {runs}", title_justify="left")
    for column in ("run", "state", "epochs", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.name, f"[{_STYLE.get(row.state, 'white')}]{row.state}[/]", row.epochs, row.detail)
    console.print(table)
    counts = {state: sum(r.state == state for r in rows) for state in dict.fromkeys(r.state for r in rows)}
    console.print(", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
    return 0 if all(row.state == "done" for row in rows) else 1
