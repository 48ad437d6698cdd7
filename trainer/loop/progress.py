"""What a run shows while it trains, on the main process: a rich bar (loss, img/s, ETA) on a
terminal, plain one-line-per-epoch messages otherwise (logs, CI, pytest), nothing on the other
processes; and the `start:` line, which says where the time to the first step went.

The start clock begins at the process's creation time (psutil), so the interpreter's own start
and the imports count: a slow start can be told from slow training (interpreter and imports,
the Accelerator and its process group, the model, the data, prepare/resume, the first step with
its cuDNN/compile warm-up)."""

from __future__ import annotations

import sys
import time

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Use as a context manager around the whole run; one bar per epoch."""

    def __init__(self, enabled: bool, console: Console | None = None):
        self.console = console or Console()
        self.enabled = enabled
        self.live = enabled and sys.stdout.isatty()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.live,
        )
        self.task = None

    def say(self, *parts: object) -> None:
        """A line on the main process's console (nothing on the others). soft_wrap: log lines stay
        one line each in files and CI logs (rich wraps at 80 columns there)."""
        if self.enabled:
            self.console.print(*parts, soft_wrap=True)

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=total, completed=done, loss=0.0, ips=0.0)

    def update(self, done: int, loss: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=done, loss=loss, ips=images_per_s)


class StartClock:
    """Phases since the process started; `mark` closes one, `line` says them all."""

    def __init__(self, imported_at: float) -> None:
        self.begin = psutil.Process().create_time()
        self.phases: list[tuple[str, float]] = [("interpreter and imports", imported_at - self.begin)]
        self.last = time.time()  # the time between the imports and this run's start goes to the next phase
        self._said = False

    def mark(self, phase: str) -> None:
        now = time.time()
        self.phases.append((phase, now - self.last))
        self.last = now

    def first_step(self) -> str | None:
        """At the end of the first step: closes it and returns the line; None ever after."""
        if self._said:
            return None
        self._said = True
        self.mark("first step")
        return self.line()

    def line(self) -> str:
        total = self.last - self.begin
        return f"start: {total:.1f} s from process start to the end of the first step (" + \
            ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases) + ")"
