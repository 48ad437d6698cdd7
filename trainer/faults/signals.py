"""Graceful stop on SIGTERM / SIGUSR1 (what schedulers send before a pre-emption or time limit)
and on a first Ctrl-C (SIGINT).

The handler only records the signal: saving a checkpoint from inside a signal handler could
interrupt a half-done optimizer step or a collective. The training loop asks every few optimizer
updates (trainer.main.STOP_CHECK_UPDATES) and at each epoch end whether any rank was signalled
(`agreed`: one rank may be signalled alone), saves a checkpoint and exits with 0.

Schedulers and launchers signal whole process groups (torchrun forwards SIGTERM with killpg,
SLURM signals every process of a step), which includes the DataLoader worker processes and the
forkserver they come from, and PyTorch's workers die on SIGTERM; the training process would then
fail at an arbitrary point ("DataLoader worker is killed by signal") instead of saving. So every
loader worker runs with STOP_SIGNALS blocked, and the ones still running at exit are killed
with SIGKILL (they would otherwise ignore multiprocessing's SIGTERM and be waited for forever):
both in shards.workers, where the workers are made, so that every loader of the project is
covered, not only the trainer's. Only the training process acts on a stop signal.

A launcher that has ended (trainer/faults/launcher.py) stops the run the same way, at the same
checks; since nobody is left to read the exit status or act on a requeue, the run then ends with
its own status (EXIT_LAUNCHER_GONE), on every rank.
"""

from __future__ import annotations

import signal
from types import FrameType

import torch
from accelerate import Accelerator

# SIGTERM, SIGUSR1 and SIGINT (Ctrl-C in a terminal reaches every process of the launch; a second
# Ctrl-C aborts): one tuple for the handler here, the loader workers' shield and the launcher.
from shards.workers import STOP_SIGNALS
from trainer.faults.launcher import LauncherWatch


class StopSignal:
    """Context manager that records the first stop signal and restores the old handlers on exit."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS, launcher: LauncherWatch | None = None):
        self.signals = signals
        self.launcher = launcher or LauncherWatch(None)
        self.received: signal.Signals | None = None
        self.launcher_gone: int | None = None  # once agreed: the pid of a launcher that has ended, on every rank
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # the user insists: stop now, without the checkpoint
        self.received = signal.Signals(signum)

    def __enter__(self) -> "StopSignal":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # Once stopping, a repeated SIGTERM/SIGUSR1 is the same stop: cluster/train.sbatch repeats
            # its warning every 5 s until the step ends, and the default action would kill a trainer
            # that has saved its checkpoint and is exiting (a failed step instead of a requeue).
            # Ignored, not handled: the interpreter's exit resets Python handlers to the default.
            if self.received is not None and sig != signal.SIGINT:
                signal.signal(sig, signal.SIG_IGN)
                continue
            signal.signal(sig, handler)

    def agreed(self, accelerator: Accelerator) -> bool:
        """Collective: True on every rank when any rank has received a stop signal or lost its launcher."""
        if self.received is not None or self.launcher.gone:
            accelerator.set_trigger()
        if not accelerator.check_trigger():
            return False
        if self.launcher_gone is None:  # one more collective, once per run: which launcher ended, if any
            gone = torch.tensor([self.launcher.pid if self.launcher.gone else 0], device=accelerator.device)
            self.launcher_gone = int(accelerator.reduce(gone, "max").item())
        return True

    def name(self) -> str:
        """Which signal stopped this process ('another process' when a peer received it)."""
        return self.received.name if self.received is not None else "another process"

    def summary(self, epoch: int) -> dict:
        """What a stopped run returns instead of its summary (trainer.main turns launcher_gone into its status)."""
        return {"stopped": True, "epoch": epoch, "launcher_gone": self.launcher_gone}

    def line(self, saved: str, *, epoch_end: bool) -> str:
        """What the run says once it has stopped and saved `saved` (e.g. "epoch 3, update 8")."""
        if self.launcher_gone:
            return f"the launcher (pid {self.launcher_gone}) is gone: saved {saved}; resume with --resume"
        when = " after the epoch's checkpoint" if epoch_end else ""
        return f"stopped by {self.name()}{when}; resume with --resume"
