"""`python -m trainer.launch ARGS` is `accelerate launch ARGS` that ends a failed run in the trainers'
own lines: no launcher traceback, and the exit status of the fault (trainer/faults.py).

`accelerate launch` reports a failed process with a ~30-line ChildFailedError traceback and its
log lines ("Sending process ... closing signal SIGTERM", "failed (exitcode: 2) ..."), and exits 1
whatever the fault was. Each trainer already says what went wrong in one `error:` line, so here:
- the launcher's own log lines are dropped (a launcher that cannot start still raises, traceback
  and all: that is a fault of the launch, not of the run);
- the exit status is the highest status of the first failed processes, so the cause (2 bad input,
  74 I/O, 124 hang) wins over a peer's "another process has gone away" (1); a process killed by
  signal N counts as 128 + N, as shells say, and gets a line here, since it could not say anything
  itself (SIGKILL: often the kernel's out-of-memory killer; see dmesg).
./launch.sh train, ./launch.sh demo and cluster/node_launch.sh start runs this way.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys


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


def main(argv: list[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # The elastic agent logs each failure and shutdown step (WARNING/ERROR) through the handler that
    # torch's logging set-up puts on "torch.distributed": the trainers' own lines say it.
    quiet = logging.getLogger("torch.distributed")
    quiet.handlers, quiet.propagate = [logging.NullHandler()], False
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except ChildFailedError as err:
        status, lines = exit_status({rank: (failure.exitcode, failure.timestamp)
                                     for rank, failure in err.failures.items()})
    except subprocess.CalledProcessError as err:  # one process: accelerate runs it as a plain subprocess
        status, lines = exit_status({0: (err.returncode, 0)})
    else:
        return 0
    for line in lines:
        print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
