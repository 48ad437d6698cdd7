"""Test support for tests/test_loader_workers.py, imported by loader workers to unpickle the dataset.

HELD stands for any lock a thread of the parent may hold at the moment a worker starts (CPython's
HEAD_LOCK under gloo's threads in the real hang, NOTES). A forked worker inherits it as it was;
a forkserver worker imports this module afresh and gets an unlocked one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset

HELD = threading.Lock()


class InheritedHeldLock(RuntimeError):
    """The worker waited `wait_s` for HELD: it inherited it held (the real code would wait forever)."""


class NeedsTheLock(IterableDataset):
    """One item, produced under HELD (as CPython's after-fork code needs HEAD_LOCK). The wait is
    bounded only so that a test ends: the worker then raises instead of sleeping forever."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s

    def __iter__(self) -> Iterator[torch.Tensor]:
        if not HELD.acquire(timeout=self.wait_s):
            raise InheritedHeldLock(f"HELD still held after {self.wait_s} s in worker pid")
        try:
            yield torch.ones(1)
        finally:
            HELD.release()
