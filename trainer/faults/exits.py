"""How a run ends on a fault: one `error:` line from the process that found it, and an exit status
that says what kind of fault it was. docs/faults.md is the table of statuses users read;
cluster/train.sbatch acts on them.

The peers of a failed process learn of it when the connection to it breaks in their next
collective: they say so in one line, with status 1, kept below the others so that a scheduler
that reports the highest status of a job's tasks (srun) reports the cause.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

EXIT_PEER = 1  # another process of the run failed (its line says why)
EXIT_BAD_INPUT = 2  # a setting, the shards, no intact checkpoint to resume
EXIT_IO = 74  # the run's files cannot be written: no space, read-only, EIO (EX_IOERR)
# Stopped with a checkpoint because the launcher that started the ranks has ended (faults.launcher);
# EX_TEMPFAIL: `--resume` continues, as cluster/train.sbatch's 75 also says.
EXIT_LAUNCHER_GONE = 75
EXIT_HANG = 124  # a wait passed --hang-timeout (faults.watchdog)

# Errors of the file system a run writes to: the user must make room or fix the mount, not the code.
IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM,
                       errno.ESTALE, errno.EFBIG, errno.ENAMETOOLONG})
# What gloo and NCCL say when the process at the other end of a collective is gone.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "Socket Timeout", "Connection refused")


@dataclass
class Identity:
    """Who this process is in the run, for its error line (from the Accelerator, once it exists)."""

    rank: int
    world: int
    main: bool
    host: str

    def prefix(self) -> str:
        return f"rank {self.rank} on {self.host}: " if self.world > 1 else ""


class RunFault(Exception):
    """A fault found after launch, as this process reports it: `line` (None: say nothing, another
    process says it) and the exit status."""

    def __init__(self, status: int, line: str | None) -> None:
        super().__init__(line or f"exit status {status}")
        self.status, self.line = status, line


def say_error(line: str) -> None:
    """`error: LINE` on stderr in one write: the ranks of a run share one log, and print()'s two writes
    (the text, then the newline) let another rank's line land in between."""
    text = f"error: {line}\n"
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (AttributeError, OSError, ValueError):  # a stderr without a file (captured: tests, notebooks)
        sys.stderr.write(text)


def io_line(err: OSError) -> str | None:
    """An OSError of the run's files as one line naming the path and the cause in words."""
    if err.errno not in IO_ERRNOS:
        return None
    path = err.filename or "the run's files"
    return f"cannot write {path}: {os.strerror(err.errno).lower()}" + _hint(err.errno) + _context(err)


def _hint(code: int) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "; make room (the last complete checkpoint is intact), then run the same command with --resume"
    if code == errno.EROFS:
        return "; choose an --out on a writable file system"
    return ""


def _context(err: BaseException) -> str:
    # A library error chained below ours ("iostream error") only helps when the errno says little.
    cause = err.__cause__
    if cause is None or getattr(err, "errno", None) != errno.EIO:
        return ""
    return f" ({type(cause).__name__}: {' '.join(str(cause).split())[:200]})"


def peer_lost(err: BaseException) -> bool:
    """True for the error a collective raises when another process of the run has gone away."""
    return isinstance(err, RuntimeError) and any(marker in str(err) for marker in PEER_LOST)


def as_fault(err: Exception, who: Identity | None) -> RunFault | None:
    """The one-line account of an error raised after launch, or None for an unexpected error (a bug,
    whose traceback the user should see)."""
    prefix = who.prefix() if who else ""
    if isinstance(err, BadInput):
        # A setting or data problem is found alike on every rank: the main process says it.
        return RunFault(EXIT_BAD_INPUT, " ".join(str(err).splitlines()) if who is None or who.main else None)
    if isinstance(err, OSError) and io_line(err):
        return RunFault(EXIT_IO, prefix + io_line(err))
    if isinstance(err, PeerFailed):
        return RunFault(err.status, f"{prefix}stopped: {err}")
    if peer_lost(err):
        said = next(marker for marker in PEER_LOST if marker in str(err))
        return RunFault(EXIT_PEER, f"{prefix}stopped: another process of the run has gone away ({said}; "
                                   f"its own line, or the launcher's, says why)")
    return None


class BadInput(Exception):
    """Bad input found after launch, alike on every rank (a setting, damaged checkpoints): the main
    process says it in one line, every rank exits 2."""


class ConfigError(BadInput, ValueError):
    """A setting that cannot work; the message starts with the flag it concerns."""


class PeerFailed(RuntimeError):
    """A collective step failed on some process; raised on the non-main ranks (the main process
    raises the failure itself; trainer.faults.agreement). `failures` lists (process index, error text)."""

    def __init__(self, what: str, failures: list[tuple[int, str]], status: int = EXIT_PEER) -> None:
        # status: the failure's own (trainer.faults.agreement passes EXIT_IO for a write error), so that the
        # launch's status is the cause's whichever rank the launcher sees end first.
        self.what, self.failures, self.status = what, failures, status
        said = "; ".join(f"process {rank}: {text}" for rank, text in failures)
        super().__init__(f"{what} failed on {said}")
