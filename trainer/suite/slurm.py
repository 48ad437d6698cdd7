"""A suite as ONE SLURM job array: `python -m trainer.suite SUITE ... --launcher slurm`.

Each task is cluster/train.sbatch for one run, unchanged: its resources, time-limit warning,
requeue within MAX_RESTARTS and resume. The script finds the run's trainer arguments in a tasks
file (VOC_ARRAY_TASKS; line N = task N, a JSON list), because an array has one command line
for all its tasks. The tasks file, the tasks' logs and a record of every array submitted for
these runs live in RUNS/.slurm/, on the file system the nodes share.

The record is what makes a second call safe: a run whose task is still known to the scheduler
(queued, running, requeued) is not submitted again, nor one whose directory a live trainer has
locked; a finished run (summary.json) is skipped as on this machine; a run whose last task ended
without finishing is submitted again, and the call says why the last one ended (its error line).
"""

from __future__ import annotations

import getpass
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from trainer.rundir import lock as run_lock
from trainer.config.yaml_files import read_run_record
from trainer.rundir.provenance import PROJECT_DIR
from trainer.config import ConfigError
from trainer.suite.board import QUEUED, Job
from trainer.suite.catalog import SuiteError
from trainer.suite.plan import last_error
from trainer.rundir.layout import CONFIG

BATCH_SCRIPT = PROJECT_DIR / "cluster" / "train.sbatch"
RECORD_DIR = ".slurm"  # RUNS/.slurm: arrays.jsonl (one line per array), the tasks files, the tasks' logs
RECORDS = "arrays.jsonl"
SCHEDULER_LIMIT_S = 60  # sbatch/squeue answer in well under a second; a dead controller must not hang the call


@dataclass
class Task:
    """The newest array task of one run, as the record and the scheduler know it."""

    array_id: str
    index: int
    log: Path
    job_id: str | None = None  # the task's own job id (SLURM_JOB_ID in it), once the scheduler split it out
    state: str | None = None  # the scheduler's state (PENDING, RUNNING, ...), None once it left the queue
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.array_id}_{self.index}"


def _scheduler(command: list[str]) -> str:
    """Run a SLURM client; its output, or a SuiteError that says what failed (never a traceback)."""
    if shutil.which(command[0]) is None:
        raise SuiteError(f"--launcher slurm: no {command[0]} on this machine's PATH; run it on a SLURM login node")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SCHEDULER_LIMIT_S, cwd=PROJECT_DIR)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"{command[0]} did not answer within {SCHEDULER_LIMIT_S} s (is slurmctld up?)") from None
    if done.returncode != 0:
        raise SuiteError(f"{' '.join(command[:2])} ... failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def newest_tasks(runs: Path) -> dict[str, Task]:
    """{run name: its newest task} from RUNS/.slurm/arrays.jsonl and the scheduler's queue."""
    records = runs / RECORD_DIR / RECORDS
    if not records.is_file():
        return {}
    tasks: dict[str, Task] = {}
    for line in records.read_text().splitlines():
        record = json.loads(line)
        for index, name in enumerate(record["runs"]):
            tasks[name] = Task(record["array_id"], index, Path(record["log"].replace("%a", str(index))))
    # Every task of this user that the scheduler still holds; -r lists a pending array task by task.
    queue = _scheduler(["squeue", "--noheader", "--array", f"--user={getpass.getuser()}",
                        "--format=%F|%K|%A|%T|%r"])
    live = {}
    for row in queue.splitlines():
        array_id, index, job_id, state, reason = row.strip().split("|", 4)
        live[(array_id, index)] = (job_id, state, reason)
    for task in tasks.values():
        task.job_id, task.state, task.reason = live.get((task.array_id, str(task.index)), (None, None, ""))
    return tasks


def requeued(task: Task, run_dir: Path) -> bool:
    """A pending task that has started before: the run's config.yaml lists a start of this very job."""
    path = run_dir / CONFIG
    if task.state != "PENDING" or task.job_id is None or not path.is_file():
        return False
    try:
        starts = read_run_record(run_dir).get("slurm") or []
    except ConfigError:  # an unreadable record only means "not known to have started"
        return False
    return any(str(start.get("job_id")) == task.job_id for start in starts if isinstance(start, dict))


def submit(jobs: list[Job], *, suite: str, runs: Path, sbatch_args: str, parallel: int | None,
           console: Console) -> int:
    """Submit the queued jobs that no task or trainer holds as one array; 0 when nothing is left to fail."""
    tasks = newest_tasks(runs)
    todo = []
    for job in jobs:
        if job.state != QUEUED:
            continue  # finished before, refused, no weights, bad settings: cli.py has said so
        task = tasks.get(job.run.name)
        if task is not None and task.state is not None:
            console.print(f"{job.run.name}: {task.state.lower()} as task {task.name}; not submitted again",
                          highlight=False, soft_wrap=True)
            continue
        holder = run_lock.holder(job.run_dir)
        if holder is not None:
            console.print(f"{job.run.name}: a trainer runs in {job.run_dir} ({holder}); not submitted",
                          highlight=False, soft_wrap=True)
            continue
        if task is not None:
            console.print(f"{job.run.name}: task {task.name} ended without finishing "
                          f"({_ended_why(task)}); submitted again", highlight=False, soft_wrap=True)
        todo.append(job)
    if not todo:
        console.print("nothing to submit: every run of the suite is finished, queued or running; "
                      f"python -m trainer.suite {suite} --runs {runs} --status shows them", highlight=False)
        return 0
    array_id, log = _submit_array(todo, suite=suite, runs=runs, sbatch_args=sbatch_args, parallel=parallel)
    for index, job in enumerate(todo):
        console.print(f"{job.run.name}: task {array_id}_{index} (log {log.replace('%a', str(index))})",
                      highlight=False, soft_wrap=True)
    throttle = f", at most {parallel} at once" if parallel else ""
    console.print(f"submitted job array {array_id}: {len(todo)} task(s){throttle}. Follow it with "
                  f"`squeue -j {array_id}` or `python -m trainer.suite {suite} --runs {runs} --status`",
                  highlight=False, soft_wrap=True)
    return 0


def _ended_why(task: Task) -> str:
    if not task.log.is_file():
        return f"no log at {task.log}"
    return last_error(task.log)


def _submit_array(jobs: list[Job], *, suite: str, runs: Path, sbatch_args: str,
                  parallel: int | None) -> tuple[str, str]:
    """sbatch the array; append its record. Returns (array job id, log path pattern with %a)."""
    folder = (runs / RECORD_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    tasks_file = folder / f"tasks-{stamp}.jsonl"
    # The batch script runs from the repository root: every path a task gets is absolute.
    tasks_file.write_text("".join(json.dumps(_absolute(job.argv)) + "\n" for job in jobs))
    array = f"0-{len(jobs) - 1}" + (f"%{parallel}" if parallel else "")
    log = str(folder / "%A_%a.out")
    command = ["sbatch", "--parsable", f"--array={array}", f"--job-name=voc-{suite}", f"--output={log}",
               f"--export=ALL,VOC_ARRAY_TASKS={tasks_file}", *shlex.split(sbatch_args), str(BATCH_SCRIPT)]
    array_id = _scheduler(command).strip().split(";")[0]
    log = log.replace("%A", array_id)
    record = {"array_id": array_id, "suite": suite, "runs": [job.run.name for job in jobs], "log": log,
              "tasks_file": str(tasks_file), "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "sbatch": command}
    with open(folder / RECORDS, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return array_id, log


def _absolute(argv: list[str]) -> list[str]:
    """The trainer arguments with --config, --shards and --out made absolute (the tasks run elsewhere)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in ("--config", "--shards", "--out"):
            out[i + 1] = str(Path(out[i + 1]).resolve())
    return [arg for arg in out if arg != "--resume"]  # the batch script always adds it
