"""The real trainer, paused at a chosen batch until a stop signal arrives: signal tests without timing.

    python tests/paused_run.py --pause-at EPOCH:BATCH --marker FILE -- TRAINER ARGS...
    accelerate launch ... tests/paused_run.py --pause-at EPOCH:BATCH --marker FILE -- TRAINER ARGS...
    python tests/paused_run.py --pause-at final --marker FILE -- TRAINER ARGS...

Runs trainer.main.main(TRAINER ARGS) unchanged, except that rank 0's training batches
(the real data source's `train`, either loader: the streaming one's workers and all) stop before handing
over batch BATCH (0-based, counted from the epoch's start) of epoch EPOCH: it writes its pid into FILE and waits until the process has
received a stop signal (SIGTERM, SIGUSR1 or SIGINT), then goes on. A test waits for FILE,
signals, and knows exactly where the run was: no sleep before the signal, no race with a fast
box. The trainer's own handler still receives the signal (it is chained, not replaced). SIGKILL
tests use the marker alone. --signals N waits for N signals and appends a line to FILE after
each but the last, so a test can send the next one only once the previous one has been handled.
`--pause-at final` pauses rank 0 after training, before the final test (a stop signal there no
longer stops the run: it finishes). With --once it pauses only while FILE does not exist yet, so a
requeued or resubmitted job (tests/test_slurm.py) goes straight on where the first start paused.
With --only-run NAME only the run whose --out folder is named NAME pauses (the tasks of a suite's
SLURM job array share one entry). With --release FILE2 the pause ends when FILE2 exists instead of on a stop signal (the run goes on
with nothing to stop it: for tests that freeze another process meanwhile).

    python tests/paused_run.py --freeze-eval-worker SPLIT --marker FILE -- TRAINER ARGS...

instead makes rank 0's first worker of the SPLIT eval loader (the streaming loader) stop itself
(SIGSTOP) before it reads anything, once, writing its pid into FILE (tests/worker_freeze.py).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import trainer.data.stream
import trainer.main
from trainer.data.stream import ShardStream
from trainer.data.device import DeviceData
from trainer.faults.signals import STOP_SIGNALS

WAIT_LIMIT_S = 300  # a test that never signals fails instead of hanging CI


def wait_for_stop_signal(marker: Path, signals: int = 1, release: Path | None = None) -> None:
    """Write `marker`, then block until `signals` stop signals have gone through the trainer's handler
    (or, with `release`, until that file exists)."""
    received = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    count = 0

    def chained(signum: int, frame: object) -> None:
        nonlocal count
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)
        count += 1
        if count < signals:
            with open(marker, "a") as fh:
                fh.write(f"handled {signal.Signals(signum).name}\n")
        else:
            received.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, chained)
    marker.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + WAIT_LIMIT_S
    # Short waits: the main thread runs Python signal handlers between them.
    while not received.wait(0.05):
        if release is not None and release.exists():
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"paused_run: no stop signal within {WAIT_LIMIT_S} s after {marker}")
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def paused_before(batches: Iterable, pause_before: int, marker: Path, signals: int = 1,
                  release: Path | None = None) -> Iterator:
    """`batches`, with a pause before the one at index `pause_before`. The source's `train` has run
    already, so the streaming loader's workers have started (from the forkserver, with the stop
    signals blocked: shards.workers); the pause is in this process, which patched `train`."""
    for index, batch in enumerate(batches):
        if index == pause_before:
            wait_for_stop_signal(marker, signals, release)
        yield batch


def pause_training(epoch: int, batch: int, marker: Path, signals: int = 1, release: Path | None = None) -> None:
    """From now on in this process, rank 0 of either data source pauses before batch `batch` of `epoch`."""
    for source in (ShardStream, DeviceData):
        real_train = source.train

        def train(self, at_epoch: int, skip: int = 0, real_train=real_train):
            batches = real_train(self, at_epoch, skip)
            if at_epoch == epoch and self.rank == 0 and skip <= batch:
                return paused_before(batches, batch - skip, marker, signals, release)
            return batches

        source.train = train


def freeze_eval_worker(split: str, marker: Path) -> None:
    """From now on in this process, rank 0's next SPLIT eval loader gets a worker that stops itself."""
    from worker_freeze import freeze  # by module name: the worker imports it to unpickle its init function
    real_eval_loader = trainer.data.stream.eval_loader

    def eval_loader(*args, **kwargs):
        loader = real_eval_loader(*args, **kwargs)
        if kwargs.get("split") == split and kwargs.get("rank") == 0 and not marker.exists() \
                and loader.num_workers > 0:
            loader.worker_init_fn = functools.partial(freeze, str(marker), loader.worker_init_fn)
        return loader

    trainer.data.stream.eval_loader = eval_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause-at",
                        help="EPOCH:BATCH (1-based epoch, 0-based batch), or 'final': before the final test")
    parser.add_argument("--freeze-eval-worker", metavar="SPLIT",
                        help="rank 0's first worker of this split's eval loader stops itself (SIGSTOP), once")
    parser.add_argument("--marker", required=True, type=Path)
    parser.add_argument("--signals", type=int, default=1, help="stop signals to wait for before going on")
    parser.add_argument("--once", action="store_true", help="no pause when the marker already exists")
    parser.add_argument("--release", type=Path, help="end the pause when this file exists (no stop signal needed)")
    parser.add_argument("--only-run", metavar="NAME",
                        help="pause only the run whose --out folder is named NAME (one task of a suite's job array)")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    trainer_args = args.trainer_args[1:] if args.trainer_args[:1] == ["--"] else args.trainer_args
    pause_now = not (args.once and args.marker.exists())
    if args.only_run is not None:
        out = trainer_args[trainer_args.index("--out") + 1] if "--out" in trainer_args else ""
        pause_now = pause_now and Path(out).name == args.only_run
    if args.freeze_eval_worker:
        freeze_eval_worker(args.freeze_eval_worker, args.marker)
        sys.exit(trainer.main.main(trainer_args))
    if args.pause_at == "final":
        real_final_test = trainer.main.test_and_write_outputs

        def final_test(run):
            if run.accelerator.is_main_process and pause_now:
                wait_for_stop_signal(args.marker, args.signals)
            return real_final_test(run)

        trainer.main.test_and_write_outputs = final_test
        sys.exit(trainer.main.main(trainer_args))
    epoch, batch = (int(part) for part in args.pause_at.split(":"))
    if pause_now:
        pause_training(epoch, batch, args.marker, args.signals, args.release)
    sys.exit(trainer.main.main(trainer_args))


if __name__ == "__main__":
    main()
