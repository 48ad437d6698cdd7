"""Refuse processes that a launcher started together but that did not form one process group.

`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs (and without
ACCELERATE_USE_CPU) starts two processes that each build a 1-process Accelerator: two
independent runs writing into the same --out, each "the main process". The launcher's
environment still says how many processes it started; Accelerate reads it for us
(get_cpu_distributed_information: WORLD_SIZE, or the MPI equivalents), so we compare that with
the group the Accelerator formed, before anything is written.
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import get_cpu_distributed_information

from trainer.faults.exits import ConfigError

HOW_TO_LAUNCH = ("launch with `./launch.sh train ...` (one process per GPU, 2 CPU processes without GPUs), or "
                 "on CPU `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...`")


def refuse_split_launch(accelerator: Accelerator) -> None:
    """Raise ConfigError (on the launcher's first process; the others exit 2 quietly) when the
    launcher started N > 1 processes but this one is in a group of 1."""
    launched = get_cpu_distributed_information()
    if launched.world_size > 1 and accelerator.num_processes == 1:
        if launched.rank != 0:
            raise SystemExit(2)  # every process would print the same line: the first says it
        raise ConfigError(f"the launcher started {launched.world_size} processes but they did not form one "
                          f"process group (each would train alone on {accelerator.device} into the same --out; "
                          f"nothing was written): {HOW_TO_LAUNCH}")
