"""Running a planned suite on this machine: each experiment as `python trainer/main.py --config RECIPE ...`.

At most len(devices) processes at once, one experiment per device (one process each: the
recipe's batch is per process, so a run never spreads over several GPUs). A process's output
goes to RUN/suite.log. A stop (Ctrl-C, SIGTERM) starts nothing more, passes SIGTERM to the
running trainers, which checkpoint and exit 0, and waits for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from trainer.suite.board import DONE, FAILED, NOT_STARTED, QUEUED, RUNNING, STOPPED, Board, Job
from trainer.suite.plan import TRAINER, last_error
from trainer.rundir.layout import SUMMARY

POLL_S = 0.5  # how often the running processes and their history.csv are looked at
ENDED_MARK = "ended:"  # RUN/suite.log's last line of a start: "=== trainer.suite TIME ended: STATE: WHY"


def execute(jobs: list[Job], devices: list[str | None], board: Board, *, threads: int | None) -> str | None:
    """Run the queued jobs; returns the name of what stopped the suite early (None when it ran through)."""
    queue = [job for job in jobs if job.state == QUEUED]
    free, running = list(devices), []
    stopped_by: list[str] = []

    # Recorded, not raised: a KeyboardInterrupt at an arbitrary point could lose track of a process.
    # A terminal's Ctrl-C reaches the trainers too (same process group); they get SIGTERM on top,
    # which they take as the same stop (only a second SIGINT aborts a trainer).
    def on_signal(signum: int, frame: object) -> None:
        stopped_by.append("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while queue or running:
            while queue and free and not stopped_by:
                job = queue.pop(0)
                _start(job, free.pop(0), board, threads)
                running.append(job)
            if stopped_by:
                for job in running:
                    _stop(job, board, stopped_by[0])
            for job in [job for job in running if job.proc.poll() is not None]:
                running.remove(job)
                free.append(job.device)
                _finish(job, board)
            if stopped_by and not running:
                break
            board.refresh()
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for job in queue:
        job.state, job.note = NOT_STARTED, f"the suite was stopped by {stopped_by[0]}"
    return stopped_by[0] if stopped_by else None


def _start(job: Job, device: str | None, board: Board, threads: int | None) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)  # N CPU runs share the cores instead of each taking all
    command = [sys.executable, str(TRAINER), *job.argv]
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(f"=== trainer.suite {datetime.now().isoformat(timespec='seconds')}"
                  f"{'' if device is None else f' CUDA_VISIBLE_DEVICES={device}'}: {' '.join(command)}\n")
        log.flush()
        job.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    job.state, job.device, job.started = RUNNING, device, time.monotonic()
    where = "" if device is None else f" on GPU {device}"
    board.say(job, f"{'resuming' if '--resume' in job.argv else 'starting'}{where} (output in {job.log})")


def _stop(job: Job, board: Board, why: str) -> None:
    if job.proc.poll() is None and not job.asked_to_stop:
        job.asked_to_stop = True
        job.proc.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint at its next step and exits 0
        board.say(job, f"{why}: asked to stop (SIGTERM); it saves a checkpoint, the next call resumes it")


def _finish(job: Job, board: Board) -> None:
    code, summary_file = job.proc.returncode, job.run_dir / SUMMARY
    if code == 0 and summary_file.is_file():
        job.state, job.summary = DONE, json.loads(summary_file.read_text())
        mean_ap = job.summary.get("test_map")
        result = "test labels hidden" if mean_ap is None else \
            f"test mAP {mean_ap:.4f} (VOC07 11-point {job.summary['test_map_voc07']:.4f})"
        job.note = f"{result}, {job.summary['wall_seconds']:.0f} s"
        job.brief = f"figures of the {job.summary['submission_model']} model (epoch {job.summary['submission_epoch']})"
    elif code == 0:
        job.state, job.note = STOPPED, "stopped with a checkpoint; the next call resumes it"
    else:
        job.state = FAILED
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        job.brief = f"{how}: {last_error(job.log)}"
        job.note = f"{job.brief} (output in {job.log})"
    with open(job.log, "a") as log:  # how this start ended, for --status (trainer.suite.status)
        log.write(f"=== trainer.suite {datetime.now().isoformat(timespec='seconds')} {ENDED_MARK} {job.state}: "
                  f"{job.brief if job.state == FAILED else job.note}\n")
    board.say(job, f"{job.state}: {job.note}")
