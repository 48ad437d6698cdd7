"""`python -m trainer.launch ARGS` is `accelerate launch ARGS` that ends a failed run in the trainers'
own lines: no launcher traceback, and the exit status of the fault (trainer/faults/exits.py).

`accelerate launch` reports a failed process with a ~30-line ChildFailedError traceback and its
log lines ("Sending process ... closing signal SIGTERM", "failed (exitcode: 2) ..."), and exits 1
whatever the fault was. Each trainer already says what went wrong in one `error:` line, so here:
- the launcher's own log lines are dropped (a launcher that cannot start still raises, traceback
  and all: that is a fault of the launch, not of the run);
- the exit status is the highest status of the first failed processes, so the cause (2 bad input,
  74 I/O, 124 hang) wins over a peer's "another process has gone away" (1); a process killed by
  signal N counts as 128 + N, as shells say, and gets a line here, since it could not say anything
  itself (SIGKILL: often the kernel's out-of-memory killer; see dmesg).
- one process (no --multi_gpu): accelerate runs it as a plain subprocess and, since 1.16, ends
  itself with status 143 on SIGTERM after killing the trainer's process tree; a scheduler's
  SIGTERM (preemption) reaches every process of the step, and the trainer must be left to save its
  checkpoint. So that case runs the same command here, and the launcher only waits: stop signals
  are for the trainer (it gets them from the scheduler, the terminal's process group, or launch.sh).
./launch.sh train, ./launch.sh demo and cluster/node_launch.sh start runs this way.
"""

from __future__ import annotations

import copy
import logging
import signal
import subprocess
import sys
from argparse import Namespace

from shards.workers import STOP_SIGNALS  # the trainer's to act on: the launcher only waits through them


def exit_status(failures: dict[int, tuple[int, int]]) -> tuple[int, list[str]]:
    """(the launch's exit status, lines to print) from {rank: (exit code, unix time it was seen)};
    negative codes are signals (torch's convention).

    The first failures (those seen within a second of the earliest: one poll of the launcher) decide
    the status, the highest of them: a cause and its peers' "gone away" (1) end together. Processes
    killed later were killed by the launcher after its grace period, while it shut the run down; a
    SIGTERM death is that shutdown too (the trainers handle SIGTERM themselves while they run).
    """
    first = min(seen for _, seen in failures.values())
    lines, statuses = [], []
    for rank, (code, seen) in sorted(failures.items()):
        late = seen > first + 1
        if code == -signal.SIGTERM:
            continue
        if not late:
            statuses.append(128 - code if code < 0 else code)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if late:
                lines.append(f"error: rank {rank} did not end within the launcher's grace period after the first "
                             f"failure and was killed by {name} ({seen - first} s later)")
            else:
                lines.append(f"error: rank {rank} was killed by {name}"
                             + (" (out of memory? see `dmesg`)" if -code == signal.SIGKILL else ""))
    return max(statuses, default=128 + signal.SIGTERM), lines


def run_one(args: Namespace) -> int:
    """accelerate's one-process launch (the same command and environment; `args` validated), waiting
    through stop signals."""
    from accelerate.commands.launch import prepare_simple_launcher_cmd_env

    cmd, env = prepare_simple_launcher_cmd_env(args)
    # Caught, not ignored: SIG_IGN would be inherited by the trainer; a handler is reset at its exec.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS}
    try:
        code = subprocess.Popen(cmd, env=env).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status, lines = exit_status({0: (code, 0)}) if code else (0, [])
    for line in lines:
        print(line, file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # The elastic agent logs each failure and shutdown step (WARNING/ERROR) through the handler that
    # torch's logging set-up puts on "torch.distributed": the trainers' own lines say it.
    quiet = logging.getLogger("torch.distributed")
    quiet.handlers, quiet.propagate = [logging.NullHandler()], False
    args = launch_command_parser().parse_args(argv)
    # launch_command's own first step, on a copy (a private function): the flags with the accelerate
    # config file's defaults filled in, which say whether accelerate would run one plain subprocess.
    from accelerate.commands.launch import _validate_launch_command

    checked, defaults, _ = _validate_launch_command(copy.deepcopy(args))
    distributed = (checked.multi_gpu, checked.use_deepspeed, checked.use_fsdp, checked.use_megatron_lm, checked.tpu)
    if not any(distributed) and (defaults is None or defaults.compute_environment == "LOCAL_MACHINE"):
        return run_one(checked)
    try:
        launch_command(args)
    except ChildFailedError as err:
        status, lines = exit_status({rank: (failure.exitcode, failure.timestamp)
                                     for rank, failure in err.failures.items()})
    else:
        return 0
    for line in lines:
        print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
