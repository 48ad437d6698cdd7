"""Graceful stop on SIGTERM / SIGUSR1 (what schedulers send before a pre-emption or time limit)
and on a first Ctrl-C (SIGINT).

The handler only records the signal: saving a checkpoint from inside a signal handler could
interrupt a half-done optimizer step or a collective. The training loop polls
`received` at each step boundary, agrees with the other ranks through
`accelerator.check_trigger()` (one rank may be signalled alone), saves and exits with 0.

Schedulers and launchers signal whole process groups (torchrun forwards SIGTERM with killpg,
SLURM signals every process of a step), which includes the DataLoader worker processes, and
PyTorch's workers die on SIGTERM; the training process then fails at an arbitrary point
("DataLoader worker is killed by signal") instead of saving. `start_workers` therefore
starts a loader's workers with the stop signals blocked: a child inherits the signal mask,
so the signal stays pending in the workers and only the training process acts on it.

The price: a worker no longer dies on SIGTERM, which is also how multiprocessing ends daemonic
children when the interpreter exits. A process leaving with its loaders still running (an
exception, a peer rank that died and broke a collective, a second Ctrl-C) would then wait for
its workers forever, or until a launcher kills it 30 s later. So at exit, workers started
here that still run are killed with SIGKILL before multiprocessing waits for them: they only
read shards, there is nothing of theirs to save.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import weakref
from collections.abc import Iterable, Iterator
from types import FrameType

from accelerate import Accelerator

# SIGINT too: Ctrl-C in a terminal reaches every process of the launch; a second Ctrl-C aborts.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopSignal:
    """Context manager that records the first stop signal and restores the old handlers on exit."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # the user insists: stop now, without the checkpoint
        self.received = signal.Signals(signum)

    def __enter__(self) -> "StopSignal":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, accelerator: Accelerator) -> bool:
        """Collective: True on every rank when any rank has received a stop signal."""
        if self.received is not None:
            accelerator.set_trigger()
        return accelerator.check_trigger()

    def name(self) -> str:
        """Which signal stopped this process ('another process' when a peer received it)."""
        return self.received.name if self.received is not None else "another process"


_shielded_workers: weakref.WeakSet = weakref.WeakSet()  # worker processes started with the stop signals blocked


def start_workers(loader: Iterable, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator:
    """iter(loader) with `signals` blocked while its worker processes are forked (see module doc)."""
    before = set(multiprocessing.active_children())
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal that came meanwhile is delivered now
        _shielded_workers.update(set(multiprocessing.active_children()) - before)


@atexit.register  # registered after multiprocessing's exit handler, so it runs before it
def _kill_shielded_workers() -> None:
    alive = [worker for worker in _shielded_workers if worker.is_alive()]
    if alive:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would call each a failed worker
    for worker in alive:
        worker.kill()
