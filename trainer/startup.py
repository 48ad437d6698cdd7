"""The `start:` line: how long a run took from its process's start to the end of its first step, by phase.

Issue 17 measured ~20 s of wall time per run of the report suite on an H200 for 4-7 s of
training; this line says where a run's start goes (interpreter and imports, the Accelerator and
its process group, the model, the data, prepare/resume, the first step with its cuDNN/compile
warm-up), so that a slow start can be told from slow training. The clock starts at the
process's creation time (psutil), which includes the interpreter's own start.
"""

from __future__ import annotations

import time

import psutil


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
