"""Loader workers start from a clean forkserver (shards.workers), not a fork of the trainer.

Forking while another thread holds a lock hands the worker a lock nobody will release (the
CPython 3.11 + gloo hang in docs/NOTES.md); the project's workers do not inherit it. They also
ignore stop signals (only the trainer acts on them), still yield the same batches, and are
killed when their process exits with a loader still running.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from loader_lock_support import HELD, InheritedHeldLock, NeedsTheLock
from shards.reader import eval_loader, sample_loader, train_loader
from shards.workers import STOP_SIGNALS, make_loader, worker_context

ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 3  # how long the forked worker waits for the lock it inherited held (a bound, not a synchronisation)
ARRIVES_S = 120  # generous: a free lock is taken at once; the first forkserver start imports torch

# What the fixture's loaders yielded at main 90aa601 (fork start, closures): the start method
# and the picklable stages must not change the data.
TRAIN_IDS_SEED_3 = [["000019", "000052", "000019", "000046"], ["000026", "000026", "000028", "000026"],
                    ["000016", "000019", "000015", "000017"]]
VAL_IDS_RANK_1 = [["000025", "000033", "000034", "000036"], ["000056"], ["000038"]]


@contextmanager
def lock_held_by_another_thread() -> Iterator[None]:
    """HELD, taken by a helper thread for the duration of the block."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with HELD:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def new_workers(before: set) -> list[multiprocessing.Process]:
    return sorted(set(multiprocessing.active_children()) - before, key=lambda p: p.pid)


def test_a_forked_worker_inherits_the_held_lock() -> None:
    """The old way, for contrast: the worker's copy of HELD stays locked (no thread there to release it)."""
    loader = DataLoader(NeedsTheLock(wait_s=BOUND_S), batch_size=None, num_workers=1, multiprocessing_context="fork")
    with lock_held_by_another_thread():
        batches = iter(loader)  # forks now, while the helper thread holds HELD
    with pytest.raises(InheritedHeldLock):  # released in the parent by now
        next(batches)


def test_a_project_loader_worker_does_not_inherit_it() -> None:
    loader = make_loader(NeedsTheLock(wait_s=ARRIVES_S), batch_size=None, num_workers=1)
    with lock_held_by_another_thread():
        assert next(iter(loader)).tolist() == [1.0]  # while the parent's HELD is still held


def test_every_project_loader_takes_the_forkserver(shards_dir: Path) -> None:
    common = dict(batch_size=4, rank=0, world_size=1, image_size=32)
    for workers, context in ((2, worker_context()), (0, None)):
        loaders = [train_loader(shards_dir, num_workers=workers, seed=0, epoch=0, preset="crop_flip", **common),
                   eval_loader(shards_dir, split="val", num_workers=workers, **common),
                   sample_loader(shards_dir, split="val", num_workers=workers)]
        assert [loader.multiprocessing_context for loader in loaders] == [context] * 3
    assert worker_context().get_start_method() == "forkserver"
    assert len(loaders[0]) == 6  # len(loader) == steps without webdataset's with_length


def test_loaders_yield_what_they_yielded_with_fork(shards_dir: Path) -> None:
    train = train_loader(shards_dir, batch_size=4, rank=0, world_size=2, num_workers=2, seed=3, epoch=0,
                         preset="crop_flip", image_size=64)
    val = eval_loader(shards_dir, split="val", batch_size=4, rank=1, world_size=2, num_workers=2, image_size=48)
    train_batches, val_batches = list(train), list(val)
    assert [ids for _, _, ids in train_batches] == TRAIN_IDS_SEED_3
    assert [ids for _, _, ids in val_batches] == VAL_IDS_RANK_1
    # The same pipeline with forked workers and the same generator gives the same pixels
    # (augmentation included): pickling the pipeline kept every seed.
    again = train_loader(shards_dir, batch_size=4, rank=0, world_size=2, num_workers=2, seed=3, epoch=0,
                         preset="crop_flip", image_size=64)
    forked = DataLoader(again.dataset, batch_size=None, num_workers=2, generator=again.generator,
                        multiprocessing_context="fork")
    for (images, states, ids), (fork_images, fork_states, fork_ids) in zip(train_batches, forked, strict=True):
        assert ids == fork_ids and torch.equal(images, fork_images) and torch.equal(states, fork_states)


def test_workers_and_their_server_ignore_stop_signals(shards_dir: Path) -> None:
    """A scheduler signals the whole process group: the workers (and the forkserver) carry on."""
    from multiprocessing import forkserver

    loader = eval_loader(shards_dir, split="val", batch_size=2, rank=0, world_size=1, num_workers=2, image_size=32)
    before = set(multiprocessing.active_children())
    batches = iter(loader)
    seen = Counter(next(batches)[2])
    workers = new_workers(before)
    assert len(workers) == 2
    server = forkserver._forkserver._forkserver_pid  # no public accessor; the server is a child of ours
    for pid in [server, *(worker.pid for worker in workers)]:
        for sig in STOP_SIGNALS:
            os.kill(pid, sig)
    seen.update(image_id for _, _, ids in batches for image_id in ids)
    assert set(seen.values()) == {1} and len(seen) == 16  # the fixture's whole val split, each image once


def test_workers_still_running_at_exit_are_killed(shards_dir: Path) -> None:
    """SIGTERM (multiprocessing's way to end daemonic children at exit) does nothing to them;
    without the SIGKILL at exit this process would wait for them forever."""
    script = ("import sys\n"
              "from shards.reader import eval_loader\n"
              f"batches = iter(eval_loader({str(shards_dir)!r}, split='val', batch_size=2, rank=0, world_size=1,"
              " num_workers=2, image_size=32))\n"
              "next(batches)\n"
              "sys.exit(3)  # the loader's workers still run\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=ARRIVES_S, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr[-3000:]


def test_workers_and_their_server_end_with_a_killed_owner(shards_dir: Path) -> None:
    """A process SIGKILLed (the out-of-memory killer, a node's kill -9) runs no exit code: its loader
    workers leave by themselves, and with them the forkserver, instead of living on as orphans."""
    from train_helpers import descendants, running

    script = ("import os, sys\n"
              "from shards.reader import eval_loader\n"
              f"batches = iter(eval_loader({str(shards_dir)!r}, split='val', batch_size=2, rank=0, world_size=1,"
              " num_workers=2, image_size=32))\n"
              "next(batches)\n"
              "print(os.getpid(), flush=True)\n"
              "sys.stdin.read()  # until the test kills it\n")
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout.readline().strip() == str(owner.pid)  # the event: its workers have produced a batch
        left = descendants(owner.pid)  # the forkserver, the resource tracker, the workers
        assert len(left) >= 3, left
        owner.kill()
        owner.wait(timeout=ARRIVES_S)
        deadline = time.monotonic() + ARRIVES_S
        while any(running(pid) for pid in left):
            assert time.monotonic() < deadline, [pid for pid in left if running(pid)]
            time.sleep(0.05)
    finally:
        owner.kill()
