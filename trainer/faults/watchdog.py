"""Every wait of a run has a deadline (--hang-timeout): past it the process ends itself in one line.

A distributed run waits on other processes all the time: the next batch of a loader (its worker
processes), every collective (stop agreement, reduce, gather, broadcast, barrier), the gradient
all-reduce inside a training step, a checkpoint save. Any of them can wait forever when the other
side never answers: a peer rank stopped or frozen, a loader worker deadlocked in fork (docs/NOTES.md),
a stale file system. The libraries' own timeouts do not cover all of them (a DataLoader timeout does
not fire while a batch is being unpickled; gloo's default is 30 minutes), and they raise in the
waiting thread, which may be stuck inside C code for good.

So a thread outside the waiting code: the main thread declares each wait

    with watchdog.waiting("the next batch of the val eval loader", epoch=3, batch=17): ...
    for batch in watchdog.watch(loader, "the next batch of the train loader", epoch=3): ...

and the watchdog thread checks the innermost declared wait about once a second. Past its deadline
it writes ONE `error:` line (what it waited for, where, the limit), dumps every thread's Python
stack (faulthandler) into the run directory, SIGKILLs this process's loader workers (a stopped one
would outlive us), releases their semaphores and ends the process with EXIT_HANG: os._exit, since the main thread is stuck by
definition. Peers that then lose their connection to this process end in one line of their own
(trainer.faults.exits).

SIGTERM (a launcher's after a peer failed, a scheduler's preemption) is recorded by trainer.faults.signals
and acted on between steps; a main thread stuck in a wait never gets there, and the launcher or the
scheduler SIGKILLs it after its grace period (30 s: torch's launcher, SLURM's default KillWait) with
nothing said. The watchdog hears the signal itself (signal.set_wakeup_fd) and gives the wait in
progress at most STOP_GRACE_S more, then says what it waited for. Not for SIGUSR1 or Ctrl-C: no
kill follows those, and a slow wait may end in its own time.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shards.workers import release_semaphores
from trainer.faults.exits import EXIT_HANG, Identity

POLL_S = 1.0  # how often the deadline is checked: a hang is reported at most this late
STOP_GRACE_S = 20.0  # a wait in progress when SIGTERM comes gets at most this much more: below the usual 30 s kill


@dataclass
class _Wait:
    what: str
    where: dict
    started: float
    deadline: float
    stop_cut: bool = field(default=False)  # the deadline was brought forward by a stop signal


class Watchdog:
    """`with Watchdog(timeout) as watchdog:` around a run; timeout <= 0 turns it off (waits unbounded).

    Who this process is, and where its stacks go, are set once known (`identify`): until then a
    hang names the pid and the stacks go to stderr.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self.identity: Identity | None = None
        self.who = f"process {os.getpid()} on {socket.gethostname()}"
        self.stacks_file: Path | None = None
        # The longest single wait so far (seconds, what): how close a run came to --hang-timeout.
        self.longest: tuple[float, str] = (0.0, "")
        self._stack: list[_Wait] = []  # declared waits, innermost last; only the main thread changes it
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._previous_wakeup_fd = -1

    # --- life cycle (main thread)
    def __enter__(self) -> "Watchdog":
        if self.timeout <= 0:
            return self
        if threading.current_thread() is threading.main_thread():
            # Signal numbers are written here by the interpreter's C-level handler, at once, even
            # while the main thread is blocked in C and its Python handlers cannot run.
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="hang-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_S)
        if self._wake_w is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._wake_r.close()
            self._wake_w.close()

    def identify(self, identity: Identity, stacks_file: Path) -> None:
        """Name this process in a hang's line, and dump its stacks into `stacks_file` then."""
        self.identity = identity
        self.who = f"rank {identity.rank} on {identity.host}"
        self.stacks_file = Path(stacks_file)

    # --- declaring waits (main thread)
    @contextmanager
    def waiting(self, what: str, **where: object) -> Iterator[None]:
        """Declare a wait: `what` is the words the error line uses ("the next batch of ..."), `where`
        adds phase, epoch, batch. Nested waits: only the innermost is timed; the outer one's clock
        starts again when the inner one ends (each single wait gets the full timeout)."""
        if self.timeout <= 0:
            yield
            return
        now = time.monotonic()
        self._stack.append(_Wait(what, where, now, now + self.timeout))
        try:
            yield
        finally:
            wait = self._stack.pop()
            now = time.monotonic()
            if now - wait.started > self.longest[0]:
                self.longest = (now - wait.started, wait.what)
            if self._stack:
                outer = self._stack[-1]
                outer.started, outer.deadline = now, now + self.timeout

    def watch(self, items: Iterable, what: str, *, first: int = 0, count: str = "batch", **where: object) -> Iterator:
        """`items`, each next() a declared wait that names the item's number (`count`, from `first`)."""
        iterator = iter(items)
        number = first
        while True:
            with self.waiting(what, **where, **{count: number}):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item
            number += 1

    # --- the watchdog thread
    def _watch(self) -> None:
        while not self._done.is_set():
            if self._wake_r is not None:
                ready, _, _ = select.select([self._wake_r], [], [], POLL_S)
                if ready:
                    self._heard_signals()
            elif self._done.wait(POLL_S):
                return
            wait = self._innermost()
            if wait is not None and time.monotonic() > wait.deadline and not self._done.is_set():
                self._fire(wait)

    def _innermost(self) -> _Wait | None:
        # The main thread may pop the last wait between a length check and the read: an IndexError
        # here would end this thread silently, and with it every deadline.
        try:
            return self._stack[-1]
        except IndexError:
            return None

    def _heard_signals(self) -> None:
        try:
            data = self._wake_r.recv(64)
        except (BlockingIOError, OSError):
            return
        wait = self._innermost()
        if signal.SIGTERM in data and wait is not None:
            cut = time.monotonic() + STOP_GRACE_S
            if cut < wait.deadline:
                wait.deadline, wait.stop_cut = cut, True

    def _fire(self, wait: _Wait) -> None:
        waited = time.monotonic() - wait.started
        where = ", ".join(f"{k} {v}" for k, v in wait.where.items() if v is not None)
        why = (f"SIGTERM came and the wait did not end within {STOP_GRACE_S:.0f} s of it" if wait.stop_cut
               else f"--hang-timeout {self.timeout:g} s")
        stacks = self._dump_stacks(wait)
        line = (f"error: {self.who} waited {waited:.0f} s for {wait.what}" + (f" ({where})" if where else "")
                + f" and gives up ({why}); every thread's stack is in {stacks}. Resume with --resume\n")
        try:
            os.write(sys.stderr.fileno(), line.encode())  # not print(): the stuck thread may hold stderr's lock
        except OSError:
            pass
        _kill_loader_workers()
        release_semaphores()
        os._exit(EXIT_HANG)

    def _dump_stacks(self, wait: _Wait) -> str:
        """faulthandler's dump of every thread into the stacks file (stderr when it cannot be written)."""
        if self.stacks_file is not None:
            try:
                with open(self.stacks_file, "w") as fh:
                    fh.write(f"{self.who}, waiting for {wait.what} {wait.where}\n")
                    fh.flush()
                    faulthandler.dump_traceback(file=fh, all_threads=True)
                return str(self.stacks_file)
            except OSError:
                pass
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        return "stderr"


def _kill_loader_workers() -> None:
    """SIGKILL the worker processes multiprocessing started for us (DataLoader workers, fork or
    forkserver): a stopped or deadlocked one would otherwise stay behind when this process ends."""
    try:
        children = multiprocessing.active_children()
    except Exception:  # noqa: BLE001 - the main thread may be changing the same set: best effort
        children = []
    for child in children:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass
