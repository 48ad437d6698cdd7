"""Test hook for tests/test_suite.py: pause one trainer process that trainer.suite starts.

trainer.suite starts `python trainer/main.py ...` itself, so a test cannot put tests/paused_run.py
in front of it. With this directory on PYTHONPATH, Python imports this file at start-up in every
process. $VOC_PAUSE is JSON {run directory: [epoch, marker file]}: in the trainer whose `--out` is
one of those directories, rank 0's training batches of that epoch stop before its first batch (after
the previous epoch's checkpoint), writes the marker and waits for a stop signal
(paused_run.pause_training; either loader). Other processes are untouched.
"""

import json
import os
import sys
from pathlib import Path


def _install() -> None:
    pauses = {str(Path(out).resolve()): where for out, where in json.loads(os.environ.get("VOC_PAUSE", "{}")).items()}
    if "--out" not in sys.argv[:-1]:
        return
    where = pauses.get(str(Path(sys.argv[sys.argv.index("--out") + 1]).resolve()))
    if where is None:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for paused_run
    from paused_run import pause_training

    pause_training(int(where[0]), 0, Path(where[1]))


_install()
