"""Test support, imported by a loader worker to unpickle its worker_init_fn: the worker stops itself.

tests/paused_run.py --freeze-eval-worker SPLIT makes rank 0's first worker of the SPLIT eval loader
run `freeze` before it reads anything: it writes its pid into the marker and sends itself SIGSTOP,
as a worker frozen by a deadlock in fork would sit (docs/NOTES.md). Its parent then waits for a
batch that never comes, deterministically, with no race against the worker's prefetching.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path


def freeze(marker: str, then: Callable[[int], None] | None, worker_id: int) -> None:
    """worker_init_fn: the loader's own init (`then`), then stop for good (worker 0 only)."""
    if then is not None:
        then(worker_id)
    if worker_id == 0:
        Path(marker).write_text(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGSTOP)
