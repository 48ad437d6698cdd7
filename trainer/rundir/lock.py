"""One run per folder: the main process holds RUN/.lock (an flock, shards.lock) for the run's life.

Two runs on one --out would overwrite each other's config.yaml, history and checkpoints, and
the "already holds checkpoints" check only sees a run after its first checkpoint. So:

- Who locks: the main process of the run, as soon as the Accelerator exists. Only the
  Accelerator says which process is main (the trainer never reads RANK itself), and the lock
  must live as long as the run: trainer.config's check, which ./launch.sh train runs once
  before the launch, exits before the ranks start, so it only peeks (`holder`) to refuse a
  folder that is already in use before any process starts.
- How every rank learns the outcome: the main process's verdict is broadcast right after
  the Accelerator is made (broadcast_object_list, the first collective of the run), so all
  ranks stop together before anything is written: the main process says why in one line
  (exit 2) and the others exit 2 quietly. No rank goes on into a run its main process
  refused, and none is left waiting in a collective for a peer that went away.
- Before that, `claim` refuses a launch whose processes did not form one group
  (trainer.faults.launch_check): each would be "the main process" of a run of its own.
- Released on any exit: the kernel drops an flock when its process ends, SIGKILL included,
  so a crashed run never blocks the next one; DataLoader workers do not hold it (they come
  from a forkserver started by fork+exec with no inherited files: shards.workers). `with` releases it and removes
  the file when train() returns or raises, so tests may run several trainings in one process.
- A folder the claim made is removed again when the run ends by an error and nothing but the
  lock was ever put in it (a model refused by build_model, a full disk at the first write):
  a refused run leaves no empty --out behind. A folder that existed before is never removed,
  nor one that holds anything (rmdir only removes empty folders).
- A lock that cannot be written (a full disk, a read-only mount) is an OSError naming the lock
  file on the main process and PeerFailed on the others (trainer.faults.agreement), not a hang.
- Several nodes: only the global main process locks; --out must be shared storage with flock
  support (local disks, NFSv4).
- What remains: two `./launch.sh train` started within the same seconds both pass the
  peek; the main process of the later one is refused as above (one error line, exit 2 from
  every rank), and `accelerate launch` then adds its own report of the failed processes.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from shards.lock import FolderBusy, FolderLock
from shards.lock import holder as _holder
from trainer.faults.agreement import agree
from trainer.faults.launch_check import refuse_split_launch
from trainer.faults.exits import ConfigError

LOCK_NAME = ".lock"  # RUN/.lock while a run is going; removed when it ends


def lock_path(out: str | Path) -> Path:
    return Path(out) / LOCK_NAME


def holder(out: str | Path) -> str | None:
    """Who runs in `out` now ('host H, pid P, since T'), or None; writes nothing."""
    return _holder(lock_path(out))


class RunDirLock:
    """`with RunDirLock(cfg.out) as lock:` around a training; `lock.claim(accelerator)` once the
    Accelerator exists takes the folder on the main process or stops every rank."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._lock = FolderLock(lock_path(out), f"--out: {out}", "in use by another run")  # as trainer.config says it
        self._created: list[Path] = []  # folders claim() made, deepest first

    def claim(self, accelerator: Accelerator) -> None:
        """Collective. Refuses a split launch, then takes the lock on the main process and tells
        every rank: raises ConfigError on the main process and exits 2 on the others when refused;
        OSError (main) / PeerFailed (others) when the lock cannot be written."""
        refuse_split_launch(accelerator)
        refusal, error = None, None
        if accelerator.is_main_process:
            try:
                self._created = _missing_folders(self.out)
                self.out.mkdir(parents=True, exist_ok=True)
                self._lock.acquire()
            except FolderBusy as err:
                refusal = str(err)
            except OSError as err:  # os.pwrite of the holder record names no file
                error = err if err.filename else OSError(err.errno, err.strerror, str(lock_path(self.out)))
        if accelerator.num_processes > 1:
            refusal = broadcast_object_list([refusal])[0]
        if refusal is not None:
            if accelerator.is_main_process:
                raise ConfigError(refusal)
            raise SystemExit(2)  # the main process says why, once
        agree(accelerator, error, f"locking {self.out}")

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


def _missing_folders(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing
