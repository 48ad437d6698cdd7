"""One run per folder: the main process holds RUN/.lock (an flock, shards.lock) for the run's life.

Two runs on one --out would overwrite each other's files, and the "already holds checkpoints"
check only sees a run after its first checkpoint. The main process takes the lock as soon as the
Accelerator says which process is main, and every rank hears the verdict before anything is
written: a refused run stops on every rank with one line (exit 2). The kernel drops an flock when
its process ends, SIGKILL included, so a crashed run never blocks the next one. A folder the claim
made is removed again when the run ends by an error with nothing else in it. docs/faults.md says
what is left open (two launches within the same seconds; several nodes need flock on shared storage).
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator

from shards.lock import FolderBusy, FolderLock
from shards.lock import holder as _holder
from trainer.faults.agreement import main_decides
from trainer.faults.disk_errors import existing_ancestor
from trainer.faults.exits import ConfigError
from trainer.faults.launch_check import refuse_split_launch
from trainer.rundir.layout import RunDir


def holder(out: str | Path) -> str | None:
    """Who runs in `out` now ('host H, pid P, since T'), or None; writes nothing. For the check made
    before a launch (`python -m trainer.config`): a rank must not peek, its own main process may hold it."""
    return _holder(RunDir(out).lock)


class RunDirLock:
    """`with RunDirLock(cfg.out) as lock:` around a training; `lock.claim(accelerator)` once the
    Accelerator exists takes the folder on the main process or stops every rank."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._lock = FolderLock(RunDir(out).lock, f"--out: {out}", "in use by another run")  # as trainer.config says it
        self._created: list[Path] = []  # folders claim() made, deepest first

    def claim(self, accelerator: Accelerator) -> None:
        """Collective. Refuses a split launch, then takes the lock on the main process and tells
        every rank: raises ConfigError on the main process and exits 2 on the others when refused;
        OSError (main) / PeerFailed (others) when the lock cannot be written."""
        refuse_split_launch(accelerator)
        refusal = main_decides(accelerator, f"locking {self.out}", self._acquire)
        if refusal is not None:
            if accelerator.is_main_process:
                raise ConfigError(refusal)
            raise SystemExit(2)  # the main process says why, once

    def _acquire(self) -> str | None:
        """Take the lock (main process): None, or why the folder is refused."""
        ancestor = existing_ancestor(self.out)
        self._created = [folder for folder in (self.out.absolute(), *self.out.absolute().parents)
                         if len(folder.parts) > len(ancestor.parts)]
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except FolderBusy as err:
            return str(err)
        except OSError as err:
            if err.filename:
                raise
            raise OSError(err.errno, err.strerror, str(RunDir(self.out).lock)) from err  # os.pwrite names no file
        return None

    def __enter__(self) -> "RunDirLock":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._lock.release()
        if exc_type is not None:
            for folder in self._created:
                try:
                    folder.rmdir()  # only when empty: anything the run wrote keeps it
                except OSError:
                    break
