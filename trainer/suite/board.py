"""trainer.suite's view of its runs: a live rich table on a terminal, one plain line per change otherwise.

Every state change is also a line (above the live table on a terminal), so a log of a suite
says what happened to each run; the table is printed once more at the end either way.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from trainer.rundir.outputs import clock, four
from trainer.suite.catalog import Run
from trainer.rundir.layout import HISTORY

QUEUED, RUNNING, DONE, FINISHED_BEFORE = "queued", "running", "done", "finished before"
REFUSED, NO_WEIGHTS, BAD_SETTINGS, FAILED, STOPPED, NOT_STARTED = (
    "refused", "no weights", "bad settings", "failed", "stopped", "not started")
_STYLE = {DONE: "green", FINISHED_BEFORE: "green", RUNNING: "cyan", QUEUED: "dim", REFUSED: "yellow",
          NO_WEIGHTS: "yellow", STOPPED: "yellow", NOT_STARTED: "yellow", BAD_SETTINGS: "red", FAILED: "red"}


@dataclass
class Job:
    """One run of the suite: its plan, and its process while it runs."""

    run: Run
    run_dir: Path
    state: str = QUEUED
    note: str = ""  # the whole story, said as a line
    brief: str = ""  # the table's cell (the note when empty)
    argv: list[str] = field(default_factory=list)  # trainer arguments after trainer/main.py
    epochs: int | None = None
    summary: dict | None = None
    device: str | None = None  # CUDA_VISIBLE_DEVICES of its process, None on CPU
    proc: subprocess.Popen | None = None
    started: float | None = None
    asked_to_stop: bool = False

    @property
    def log(self) -> Path:
        return self.run_dir / "suite.log"

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FINISHED_BEFORE)

    def epochs_done(self) -> int:
        path = self.run_dir / HISTORY
        return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


class Board:
    """Use as a context manager around the suite's execution."""

    def __init__(self, jobs: list[Job], console: Console, title: str):
        self.jobs, self.console, self.title = jobs, console, title
        self.live = Live(self.table(), console=console, refresh_per_second=2) if console.is_terminal else None

    def __enter__(self) -> "Board":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.update(self.table())
            self.live.__exit__(*exc)
        else:
            self.console.print(self.table())

    def say(self, job: Job, message: str) -> None:
        # soft_wrap: one line per message in logs (rich would wrap at 80 columns there)
        self.console.print(f"[bold]{job.run.name}[/bold]: {message}", soft_wrap=True, highlight=False)

    def refresh(self) -> None:
        if self.live:
            self.live.update(self.table())

    def table(self) -> Table:
        table = Table(title=self.title)
        longest = max(len(job.run.name) for job in self.jobs)
        for name, width in (("run", longest), ("state", 15), ("epochs", 6), ("test mAP", 8), ("VOC07", 6), ("time", 7)):
            table.add_column(name, justify="left" if name in ("run", "state") else "right", no_wrap=True,
                             min_width=width)
        table.add_column("note", overflow="ellipsis", no_wrap=True, max_width=70)  # the whole note: a line above
        for job in self.jobs:
            if job.state == RUNNING:
                seconds = time.monotonic() - job.started
            else:
                seconds = (job.summary or {}).get("wall_seconds")
            done = job.epochs_done()
            epochs = "" if not done and job.state != RUNNING else f"{done}/{job.epochs}" if job.epochs else str(done)
            style = _STYLE.get(job.state, "")
            table.add_row(job.run.name, f"[{style}]{job.state}[/{style}]", epochs, four((job.summary or {}).get("test_map")),
                          four((job.summary or {}).get("test_map_voc07")), clock(seconds),
                          f"output in {job.log}" if job.state == RUNNING else job.brief or job.note)
        return table
