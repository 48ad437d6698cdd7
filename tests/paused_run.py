"""The real trainer, paused at a chosen batch until a stop signal arrives: signal tests without timing.

    python tests/paused_run.py --pause-at EPOCH:BATCH --marker FILE -- TRAINER ARGS...
    accelerate launch ... tests/paused_run.py --pause-at EPOCH:BATCH --marker FILE -- TRAINER ARGS...
    python tests/paused_run.py --pause-at final --marker FILE -- TRAINER ARGS...

Runs trainer.main.main(TRAINER ARGS) unchanged, except that rank 0's training batches
(the real shards.reader.train_loader as trainer.data uses it, workers and all) stops before handing over batch
BATCH (0-based) of epoch EPOCH: it writes its pid into FILE and waits until the process has
received a stop signal (SIGTERM, SIGUSR1 or SIGINT), then goes on. A test waits for FILE,
signals, and knows exactly where the run was: no sleep before the signal, no race with a fast
box. The trainer's own handler still receives the signal (it is chained, not replaced). SIGKILL
tests use the marker alone. --signals N waits for N signals and appends a line to FILE after
each but the last, so a test can send the next one only once the previous one has been handled.
`--pause-at final` pauses rank 0 after training, before the final test (a stop signal there no
longer stops the run: it finishes). With --once it pauses only while FILE does not exist yet, so a
requeued or resubmitted job (tests/test_slurm.py) goes straight on where the first start paused.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import trainer.data
import trainer.main
from trainer.signals import STOP_SIGNALS

WAIT_LIMIT_S = 300  # a test that never signals fails instead of hanging CI


def wait_for_stop_signal(marker: Path, signals: int = 1) -> None:
    """Write `marker`, then block until `signals` stop signals have gone through the trainer's handler."""
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
        if time.monotonic() > deadline:
            raise SystemExit(f"paused_run: no stop signal within {WAIT_LIMIT_S} s after {marker}")
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class PausedLoader:
    """A train loader that pauses before one batch; iter() starts the real loader's workers at once,
    so they still start where the trainer shields them from stop signals (trainer.signals)."""

    def __init__(self, loader: Iterable, pause_before: int, marker: Path, signals: int = 1) -> None:
        self.loader, self.pause_before, self.marker, self.signals = loader, pause_before, marker, signals

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        return self._batches(iter(self.loader))

    def _batches(self, batches: Iterator) -> Iterator:
        for index, batch in enumerate(batches):
            if index == self.pause_before:
                wait_for_stop_signal(self.marker, self.signals)
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause-at", required=True,
                        help="EPOCH:BATCH (1-based epoch, 0-based batch), or 'final': before the final test")
    parser.add_argument("--marker", required=True, type=Path)
    parser.add_argument("--signals", type=int, default=1, help="stop signals to wait for before going on")
    parser.add_argument("--once", action="store_true", help="no pause when the marker already exists")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    trainer_args = args.trainer_args[1:] if args.trainer_args[:1] == ["--"] else args.trainer_args
    pause_now = not (args.once and args.marker.exists())
    if args.pause_at == "final":
        real_final_test = trainer.main.test_and_write_outputs

        def final_test(cfg, accelerator, *a, **kw):
            if accelerator.is_main_process and pause_now:
                wait_for_stop_signal(args.marker, args.signals)
            return real_final_test(cfg, accelerator, *a, **kw)

        trainer.main.test_and_write_outputs = final_test
        sys.exit(trainer.main.main(trainer_args))
    epoch, batch = (int(part) for part in args.pause_at.split(":"))
    real_train_loader = trainer.data.train_loader

    def train_loader(*a, **kw):
        loader = real_train_loader(*a, **kw)
        if kw["epoch"] == epoch and kw["rank"] == 0 and pause_now:
            return PausedLoader(loader, batch, args.marker, args.signals)
        return loader

    trainer.data.train_loader = train_loader
    sys.exit(trainer.main.main(trainer_args))


if __name__ == "__main__":
    main()
