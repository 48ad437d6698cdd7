"""Every experiment of a suite in one command: `python -m trainer.suite SUITE --shards DIR --runs RUNS [FLAGS...]`.

Suites are data (configs/suites.yaml, or --suites FILE): `report` (the reference report's nine
runs), `part1a`, `ablation`, `ours`; `--list` shows them. Each run is its own directory
RUNS/<name>, trained by `python trainer/main.py --config RECIPE --shards DIR --out RUNS/<name>
[FLAGS...]` in one process, so a report recipe keeps the report's batch of 50. A finished run
(summary.json) is skipped, an unfinished one resumes, one that fails is reported and the rest go
on; exit status 0 only when every run of the suite has finished. See trainer.suite.plan and
trainer.suite.local. With --launcher slurm the runs go to a cluster as one job array instead
(trainer.suite.slurm); --status shows where each run stands (trainer.suite.status).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import typing
from pathlib import Path

import torch
from rich.console import Console

from trainer.config import validate
from trainer.config import ConfigError, TrainConfig, flag
from trainer.suite.board import BAD_SETTINGS, NO_WEIGHTS, REFUSED, Board
from trainer.suite.local import execute
from trainer.suite.plan import plan_job
from trainer.suite.slurm import submit
from trainer.suite.status import print_status
from trainer.suite.catalog import RECIPE_FIELDS, SUITE_SETS, SUITES_FILE, SuiteError, given_flags, load_suites, shown_path

EPILOG = "\n\n".join(textwrap.fill(paragraph, 100, break_on_hyphens=False) for paragraph in (
    "Trailing flags are trainer flags (python trainer/main.py --help) applied to every run, e.g. "
    "--epochs 1 --workers 0 for a smoke pass. A flag that changes a recipe's fixed part "
    f"({', '.join(flag(n) for n in RECIPE_FIELDS)}) is refused for each run whose recipe it changes, unless "
    "--allow-recipe-change; trainer.report then lists how each run differs from its recipe. Epochs, seed, "
    "precision, evaluation and speed flags are not the recipe's kind and always apply.",
    "--launcher slurm submits the runs that are not finished as ONE job array from a login node (each task is "
    "cluster/train.sbatch for one run: requeue, resume; --sbatch-args for its resources, e.g. \"--gpus-per-node=1 "
    "--time=2:00:00\"; --parallel N becomes the array's %N) and returns; calling it again submits nothing twice. "
    "--status shows each run's state (done, queued, running, requeued, stopped, failed with its error line).",
    "Then: python -m trainer.report RUNS --out RUNS/REPORT.md"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, like the trainer's
        raise SuiteError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer.suite", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                     usage="%(prog)s SUITE --shards DIR --runs RUNS [--parallel N] [--per-gpu K] [--launcher local|slurm] "
                           "[--sbatch-args OPTIONS] [--allow-recipe-change] [--suites FILE] [TRAINER FLAGS...] | "
                           "SUITE --runs RUNS --status | --list",
                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("suite", nargs="?", help="the suite to run (see --list)")
    parser.add_argument("--shards", metavar="DIR", help="shards directory (python -m shards.pack --out)")
    parser.add_argument("--runs", metavar="RUNS", help="directory of the run directories, one per experiment: RUNS/<run name>")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="experiments at once: one per GPU on a GPU node (at most the visible GPUs x --per-gpu), "
                             "else N CPU processes sharing the cores (default 1); with --launcher slurm the "
                             "array's throttle %%N (default: as many as the cluster runs)")
    parser.add_argument("--per-gpu", type=int, default=1, metavar="K",
                        help="experiments that may share one GPU (default 1): a report run holds ~3 GB of "
                             "activations plus its decoded splits (~2.5 GB at VOC07 size), so 4 fit a 40 GB "
                             "GPU; small models step faster side by side than alone (launch-bound); GPUs only")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: this machine's processes (default); slurm: one job array of cluster/train.sbatch")
    parser.add_argument("--sbatch-args", default="", metavar="OPTIONS",
                        help="sbatch options for every task of the array, one string (--launcher slurm)")
    parser.add_argument("--status", action="store_true",
                        help="show each run's state from its directory and the scheduler, then exit")
    parser.add_argument("--allow-recipe-change", action="store_true",
                        help="let trailing flags change a recipe's fixed part (the report lists the differences)")
    parser.add_argument("--suites", default=str(SUITES_FILE), metavar="FILE", help=f"suites file (default {shown_path(SUITES_FILE)})")
    parser.add_argument("--list", action="store_true", help="list the suites and their runs, then exit")
    return parser


def print_suites(suites: dict, console: Console) -> None:
    for suite in suites.values():
        console.print(f"[bold]{suite.name}[/bold]  {suite.about}", highlight=False, soft_wrap=True)
        width = max(len(run.name) for run in suite.runs)
        for run in suite.runs:
            console.print(f"  {run.name:<{width}}  {shown_path(run.recipe)}", highlight=False, soft_wrap=True)


def gpu_devices(parallel: int, cpu: bool, per_gpu: int = 1) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES value per slot (None: CPU): at most `per_gpu` experiments per GPU."""
    if cpu or not torch.cuda.is_available():
        return [None] * parallel
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible is not None else \
        [str(i) for i in range(torch.cuda.device_count())]
    return gpu_slots(ids, parallel, per_gpu)


def gpu_slots(ids: list[str], parallel: int, per_gpu: int) -> list[str]:
    """`parallel` slots over the GPUs `ids`, at most `per_gpu` on each, spread over all GPUs first."""
    slots = [gpu for _ in range(per_gpu) for gpu in ids]
    if parallel > len(slots):
        raise SuiteError(f"--parallel {parallel}: {len(ids)} GPU(s) visible and --per-gpu {per_gpu} allows "
                         f"{len(slots)} experiments at once; use --parallel {len(slots)} or fewer, a larger "
                         "--per-gpu, or --cpu to run CPU processes")
    return slots[:parallel]


def main(argv: list[str] | None = None) -> int:
    console = Console()
    if not console.is_terminal:  # a log: lines are not wrapped, so neither should the table be at 80 columns
        console = Console(width=160)
    try:
        args, flags = build_parser().parse_known_args(_sbatch_args_joined(sys.argv[1:] if argv is None else argv))
        suites = load_suites(args.suites)
        if args.list:
            print_suites(suites, console)
            return 0
        if args.status:
            return print_status(_status_check(args, flags, suites), Path(args.runs), console)
        suite, given = _check(args, flags, suites)
        devices = gpu_devices(args.parallel or 1, bool(given.get("cpu")), args.per_gpu) \
            if args.launcher == "local" else []
    except (SuiteError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = Path(args.runs)
    console.print(f"checking the {len(suite.runs)} runs of suite {suite.name} (settings, models, weights)",
                  highlight=False)
    try:
        jobs = [plan_job(run, shards=args.shards, runs=runs, flags=flags, given=given,
                         allow_change=args.allow_recipe_change) for run in suite.runs]
    except KeyboardInterrupt:
        console.print("interrupted while checking the runs: nothing was started")
        return 130
    if args.launcher == "slurm":
        for job in jobs:
            if job.state != "queued":
                console.print(f"{job.run.name}: {job.state}" + (f": {job.note}" if job.note else ""), highlight=False,
                              soft_wrap=True)
        try:
            code = submit(jobs, suite=suite.name, runs=runs, sbatch_args=args.sbatch_args, parallel=args.parallel,
                          console=console)
        except SuiteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        # Refused, no weights, bad settings: said above, and not the scheduler's to fix.
        return code or int(any(job.state in (REFUSED, NO_WEIGHTS, BAD_SETTINGS) for job in jobs))
    parallel = args.parallel or 1
    threads = max(1, (os.cpu_count() or 1) // parallel) if devices[0] is None and parallel > 1 else None
    board = Board(jobs, console, title=f"suite {suite.name}: {runs}")
    with board:
        for job in jobs:
            if job.state != "queued":
                board.say(job, f"{job.state}" + (f": {job.note}" if job.note else ""))
        stopped_by = execute(jobs, devices, board, threads=threads)
    finished = [job for job in jobs if job.finished]
    others = [job for job in jobs if not job.finished]
    counts = ", ".join(f"{sum(j.state == s for j in others)} {s}" for s in dict.fromkeys(j.state for j in others))
    console.print(f"{len(finished)} of {len(jobs)} runs finished" + (f"; {counts}" if counts else "") +
                  (f" (stopped by {stopped_by})" if stopped_by else ""), highlight=False, soft_wrap=True)
    if finished:
        console.print(f"report: python -m trainer.report {runs} --out {runs / 'REPORT.md'}", highlight=False,
                      soft_wrap=True)
    return 0 if not others else 1


def _check(args: argparse.Namespace, flags: list[str], suites: dict) -> tuple:
    """The suite and the trailing flags as {field: value}; SuiteError/ConfigError on bad input."""
    if not args.suite:
        raise SuiteError("name a suite (one of: " + ", ".join(suites) + "), or --list")
    if args.suite not in suites:
        raise SuiteError(f"unknown suite '{args.suite}' in {args.suites}; known: {', '.join(suites)}")
    for name in ("shards", "runs"):
        if not getattr(args, name):
            raise SuiteError(f"--{name} is required")
    if args.parallel is not None and args.parallel < 1:
        raise SuiteError(f"--parallel must be >= 1, got {args.parallel}")
    if args.per_gpu < 1:
        raise SuiteError(f"--per-gpu must be >= 1, got {args.per_gpu}")
    if args.per_gpu != 1 and args.launcher != "local":
        raise SuiteError("--per-gpu is for --launcher local (a SLURM array task gets its own GPUs)")
    if args.sbatch_args and args.launcher != "slurm":
        raise SuiteError("--sbatch-args is for --launcher slurm")
    if args.launcher == "slurm" and shutil.which("sbatch") is None:  # before the runs are planned (seconds)
        raise SuiteError("--launcher slurm: no sbatch on this machine's PATH; run it on a SLURM login node")
    given = given_flags(flags)
    taken = [flag(name) for name in SUITE_SETS if name in given]
    if taken:
        raise SuiteError(f"{', '.join(taken)}: the suite sets --config, --out and --resume for each run "
                         "(recipe, RUNS/<name>, resume when unfinished); drop them")
    validate(TrainConfig(shards=args.shards, out=str(Path(args.runs) / ".suite-check")))  # the shards, once
    return suites[args.suite], given


def _sbatch_args_joined(argv: list[str]) -> list[str]:
    """`--sbatch-args "--time=1:00:00"` as `--sbatch-args=--time=1:00:00`: argparse would take a value
    that looks like an option (and has no space) for an option of its own and refuse the call."""
    argv = list(argv)
    if "--sbatch-args" in argv[:-1]:
        at = argv.index("--sbatch-args")
        argv[at:at + 2] = [f"--sbatch-args={argv[at + 1]}"]
    return argv


def _status_check(args: argparse.Namespace, flags: list[str], suites: dict):
    """The suite for --status, which reads RUNS and starts nothing: trainer flags have no place there."""
    if flags:
        raise SuiteError(f"--status takes no trainer flags ({' '.join(flags)})")
    if not args.suite or args.suite not in suites:
        raise SuiteError(f"--status: name a suite (one of: {', '.join(suites)})")
    if not args.runs:
        raise SuiteError("--runs is required")
    return suites[args.suite]


if __name__ == "__main__":
    sys.exit(main())
