"""A whole training run, timed, with its peak GPU memory: trainer/main.py's main() in this process.

    accelerate launch --num_processes 1 benchmarks/timed_train.py --json-out FILE -- TRAINER ARGS

The trainer itself reports time and images/s but not memory, and torch's peak counters are
per process: so this runs the trainer's own entry point unchanged in this process, then reads
torch.cuda.max_memory_allocated / max_memory_reserved (null on CPU) and writes them with the
run's summary.json and history.csv into FILE (the main process only). Exits with the trainer's
status.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch
from accelerate import PartialState

from trainer.main import main as train_main

MB = 2**20


def _value(argv: list[str], flag: str) -> str | None:
    """The value of `flag` in a trainer command line (`--out DIR` or `--out=DIR`)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/timed_train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path, required=True)
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER, help="after --: trainer/main.py's arguments")
    args = parser.parse_args(argv)
    trainer_args = args.trainer_args[1:] if args.trainer_args[:1] == ["--"] else args.trainer_args
    out = _value(trainer_args, "--out")
    if out is None:
        parser.error("the trainer arguments need --out RUN (its summary.json is read from there)")

    start = time.perf_counter()
    status = train_main(trainer_args)
    seconds = time.perf_counter() - start
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if PartialState().is_main_process:
        summary_path = Path(out) / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        record = {
            "trainer_args": trainer_args, "exit_status": status, "seconds_in_trainer": round(seconds, 2),
            "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / MB, 1) if cuda else None,
            "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved() / MB, 1) if cuda else None,
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "summary": summary, "history": _history(Path(out) / "history.csv"),
        }
        args.json_out.write_text(json.dumps(record, indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
