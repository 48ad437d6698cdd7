"""One writer per folder: an flock(2) on a lock file, held for as long as the writer lives.

A pid file would outlive a SIGKILL and then need guessing whether it is stale; an flock
belongs to the open file and the kernel drops it when the holder exits in any way (a crash,
SIGKILL, the OOM killer), so a lock is never stale. Processes forked while it is held share it
until they exit (the loaders' workers do not: they come from a forkserver, shards.workers, that
was started by fork+exec with no inherited files). Local file systems and NFSv4 support flock
(Linux emulates it there with POSIX locks, which the server recovers when a client dies).

The holder writes who it is (host, pid, start time) into the file, so a refusal can say who
holds the folder. The file is removed on release; `acquire` then re-checks that the file it
locked is still the one at the path, since a process that opened the file just before the
removal could otherwise hold a lock on a deleted file while a third process locks a new one.

Used by shards.pack (a lock next to the shard folder it creates) and, through
trainer.rundir.lock, by the trainer (a lock inside the run directory).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

_RETRIES = 20  # a lock file removed under us again and again: give up instead of looping


class FolderBusy(RuntimeError):
    """Another live process holds the lock; the message names the folder and the holder."""


def describe_holder(text: str) -> str:
    """'host H, pid P, since YYYY-MM-DD HH:MM:SS' from a lock file's content."""
    try:
        who = json.loads(text)
        return f"host {who['host']}, pid {who['pid']}, since {who['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded its name yet"


class FolderLock:
    """Exclusive lock on `path` (a lock file) for the process that holds this object.

    A refusal reads "{name} is {what} ({holder}); ...", e.g. name "--out runs/a", what "in use
    by another run".
    """

    def __init__(self, path: str | os.PathLike, name: str, what: str) -> None:
        self.path, self.name, self.what = Path(path), name, what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise FolderBusy at once (never waits); records this process in the file."""
        for _ in range(_RETRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read(fd)
                os.close(fd)
                raise FolderBusy(f"{self.name} is {self.what} ({describe_holder(holder)}); wait for it to "
                                 f"end, or choose another folder") from None
            if _same_file(fd, self.path):
                self._fd = fd
                break
            os.close(fd)  # the file was removed (released) meanwhile: lock the one on disk now
        else:
            raise RuntimeError(f"{self.path}: the lock file keeps disappearing; is another program deleting it?")
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (record + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: see the module docstring
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: str | os.PathLike) -> str | None:
    """Who holds the lock file `path` now ('host H, pid P, since T'), or None when nobody does.

    Peeks with a shared lock that is dropped at once; writes nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return describe_holder(_read(fd))
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
