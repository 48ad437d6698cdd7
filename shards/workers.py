"""Where the shard loaders' worker processes come from: a forkserver, never a fork of the caller.

Why not fork: the trainer starts loader workers within milliseconds of a gloo collective, and
CPython 3.11's after-fork code takes a lock (HEAD_LOCK) that gloo's native threads may hold at
that moment (gh-112275); the forked worker then sleeps forever (NOTES: "A hang seen in the test
suite", ~1 hang per 1,000-1,600 forks). A forkserver is a clean single-threaded process started
by fork+exec; workers are forked from it, so no thread of the trainer can hold a lock they inherit.

Why the preload: without it every worker imports torch itself (~4 s on a quiet 2-core box, ~17 s
under load). The server imports PRELOAD and the main module (what the worker re-imports to
unpickle its dataset: `_main_preload`) once; each worker start is then a fork of a warm server
(docs/data.md, Loader workers).

Stop signals: schedulers signal whole process groups (torchrun's killpg, SLURM's step), and a
loader worker must not die of it: the training process decides (trainer/faults/signals.py). A
forkserver worker inherits the server's signal mask, not the caller's, so the shield is here:
the server is started with STOP_SIGNALS blocked (it must survive them too: a dead server makes
the trainer count its live workers as dead), and `init_worker` blocks them again in each
worker (`worker_init_fn`), whoever started the server. A worker that ignores SIGTERM is also one
that multiprocessing cannot end at interpreter exit (it sends SIGTERM, then waits), so workers
of loaders made here that still run at exit are killed with SIGKILL: they only read shards.

A process that dies without an exit (SIGKILL, the out-of-memory killer) kills nothing, and its
workers would live on: PyTorch's worker watches its parent, which is the server, not the loader's
process; and the server lives as long as any worker holds its "alive" pipe. Each worker therefore
watches the loader's process itself (a pidfd, opened at the worker's start) and leaves when it ends.

Process-wide state, unavoidable: multiprocessing has one forkserver (and one preload list) per
interpreter; `worker_context` sets it up once. `_started` remembers the workers to SIGKILL at exit.
"""

from __future__ import annotations

import ast
import atexit
import functools
import multiprocessing
import multiprocessing.util  # its exit handler must be registered before ours (see _kill_started_workers)
import os
import select
import signal
import sys
import threading
import weakref
from multiprocessing import forkserver, resource_tracker
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import SemLock
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

# What a scheduler or a terminal sends to stop a run (trainer.faults.signals handles them in the trainer).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

# Imported once by the server. torchvision.transforms.v2 and webdataset are what unpickling a
# pipeline needs beyond torch; shards.reader brings the rest of the project's loader code.
PRELOAD: tuple[str, ...] = ("torch", "torchvision", "torchvision.transforms.v2", "webdataset",
                            "shards.reader", "shards.workers")

_started: weakref.WeakSet = weakref.WeakSet()  # worker processes of loaders made here (killed at exit)


def init_worker(owner: int, worker_id: int = 0) -> None:
    """worker_init_fn: this worker leaves STOP_SIGNALS pending (only `owner`, the process whose loader
    it serves, acts on them) and ends as soon as `owner` has ended, however it ended."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        owner_fd = os.pidfd_open(owner)  # a handle on that very process: no pid reuse can fool it
    except ProcessLookupError:  # ended already
        os._exit(0)
    except OSError:  # no pidfd (Linux < 5.3): PyTorch's own parent watch is all there is
        return

    def leave_with_owner() -> None:
        select.select([owner_fd], [], [])  # readable once the owner has exited
        os._exit(0)  # nothing to save: the worker only reads shards

    threading.Thread(target=leave_with_owner, name="owner-watch", daemon=True).start()


def _main_preload() -> list[str]:
    """What a worker imports when it re-runs the main module to unpickle its dataset (spawn rules).
    `python -m X`: X by name (its body re-runs on warm imports); `-m pkg` (pytest): nothing re-runs.
    A script: the modules its top level imports, as the parent has them (Python 3.11's forkserver
    drops the script path a '__main__' preload needs, so name them)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return [] if spec.name.endswith("__main__") else [spec.name]
    path = getattr(main, "__file__", None)
    if path is None:
        return []
    names: list[str] = []
    for node in ast.parse(Path(path).read_text()).body:  # top level only: what re-running it imports
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return [name for name in dict.fromkeys(names) if name in sys.modules]  # modules, already imported here


@functools.cache
def worker_context() -> BaseContext:
    """The forkserver context, its server started now with the preload and STOP_SIGNALS blocked."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *_main_preload()])
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # Starting the resource tracker unblocks SIGINT/SIGTERM in this thread (CPython's
        # resource_tracker.ensure_running); start it first, then block again for the server.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        # fork+exec (no Python code runs between them): safe beside gloo's threads. The server
        # imports PRELOAD in the background; the first worker start waits for it.
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return context


class _WorkerLoader(DataLoader):
    """A DataLoader that remembers the workers each iterator starts, for the SIGKILL at exit."""

    def __iter__(self) -> Any:
        before = set(multiprocessing.active_children())
        iterator = super().__iter__()
        _started.update(set(multiprocessing.active_children()) - before)
        return iterator


def make_loader(dataset: Dataset, *, num_workers: int, **options: Any) -> DataLoader:
    """DataLoader(dataset, num_workers=..., **options), workers (if any) from worker_context()."""
    if num_workers == 0:  # everything in this process: no server, no workers
        return DataLoader(dataset, num_workers=0, **options)
    return _WorkerLoader(dataset, num_workers=num_workers, multiprocessing_context=worker_context(),
                         worker_init_fn=functools.partial(init_worker, os.getpid()), **options)


@atexit.register  # registered after multiprocessing's exit handler, so it runs before it
def _kill_started_workers() -> None:
    alive = [worker for worker in _started if worker.is_alive()]
    if alive:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would call each a failed worker
    for worker in alive:
        worker.kill()


def release_semaphores() -> None:
    """Unlink the named semaphores of this process's loaders (their queues and events), as a normal
    exit does. For an exit by os._exit (trainer/faults/watchdog.py), which skips multiprocessing's
    finalizers: the resource tracker would then unlink them itself, and warn of "leaked semaphore
    objects" that nobody can act on. Best effort: multiprocessing keeps its finalizers in a private
    registry."""
    try:
        finalizers = list(multiprocessing.util._finalizer_registry.values())
    except Exception:  # noqa: BLE001 - another Python's internals: nothing to release
        return
    for finalizer in finalizers:
        if getattr(finalizer, "_callback", None) is SemLock._cleanup:
            try:
                finalizer()
            except OSError:  # unlinked already
                pass
