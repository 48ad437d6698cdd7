"""A rank never outlives the launcher that started it.

torch's elastic launcher (accelerate launch with several processes, torchrun, trainer.launch) starts
every rank in a session of its own, so a `kill -9` of the launcher, or of its process group, reaches
no rank: they are re-parented to init and train on, holding the run's lock, with nobody reading
their output. accelerate's one-process launch is no better off after a `kill -9`. So every rank that
a launcher started watches that process through a pidfd (a handle on that very process: no pid reuse
can fool it, as the loader workers watch their loader in shards/workers.py) and, once it has ended,
stops as on SIGTERM (trainer/faults/signals.py): at the next stop check, on every rank together,
with a checkpoint. A plain `python trainer/main.py` has no launcher and is not watched: a terminal
closed under a `nohup` run must not stop it.

A launcher that has died leaves its ranks' output pipes without a reader (accelerate's one-process
launch reads the trainer's stderr through one; `| tee` does the same): a write to them would fail
with EPIPE in the middle of the stop. The watch points such a stream at /dev/null at once.
"""

from __future__ import annotations

import os
import select
import threading

# Set in the environment of the processes a launcher starts: torch elastic's agent documents the
# first for its workers; accelerate's one-process launch sets the second (and elastic's workers get
# it from accelerate too). A plain `python trainer/main.py` has neither.
LAUNCHED_BY = ("TORCHELASTIC_RUN_ID", "ACCELERATE_DYNAMO_BACKEND")


def launcher_pid() -> int | None:
    """The pid of the launcher that started this process (its parent), None without a launcher."""
    if not any(name in os.environ for name in LAUNCHED_BY):
        return None
    return os.getppid()


class LauncherWatch:
    """Watches the launcher from a daemon thread; `gone` turns True once it has ended."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._gone = threading.Event()
        if pid is None:
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # ended while this process started
            self._launcher_ended()
            return
        except OSError:  # no pidfd (Linux < 5.3): no watch, as before
            self.pid = None
            return
        threading.Thread(target=self._wait, args=(fd,), name="launcher-watch", daemon=True).start()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    def wait(self, timeout: float) -> bool:
        """True once the launcher has ended (tests wait on it instead of sleeping)."""
        return self._gone.wait(timeout)

    def _wait(self, fd: int) -> None:
        select.select([fd], [], [])  # readable once the process has exited
        os.close(fd)
        self._launcher_ended()

    def _launcher_ended(self) -> None:
        for stream in (1, 2):
            if _reader_gone(stream):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream)
                os.close(null)
        self._gone.set()


def _reader_gone(fd: int) -> bool:
    """True when fd is a pipe whose reading end is closed (Linux reports POLLERR on its writing end)."""
    poll = select.poll()
    try:
        poll.register(fd, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (OSError, ValueError):
        return False
