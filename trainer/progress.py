"""Progress display on the main process: a rich bar (loss, img/s, ETA) on a terminal, plain
one-line-per-epoch messages otherwise (logs, CI, pytest), nothing on the other processes."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Use as a context manager around the whole run; one bar per epoch."""

    def __init__(self, enabled: bool, console: Console | None = None):
        self.console = console or Console()
        self.live = enabled and sys.stdout.isatty()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.live,
        )
        self.task = None

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=total, completed=done, loss=0.0, ips=0.0)

    def update(self, done: int, loss: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=done, loss=loss, ips=images_per_s)
