"""cluster/train.sbatch on a real SLURM: a 2-node cluster on localhost (tests/slurm_cluster.py).

Each test submits the batch script as a user does (sbatch from the repository root); the trainers
are real (gloo on CPU, tiny model and shards). Signals are placed with paused runs
(tests/paused_run.py through the script's test-only VOC_TRAIN_ENTRY), never with sleeps.
Skipped without Debian's slurm-wlm and munge or without root (`./launch.sh test` installs them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import CPUS_PER_NODE, URGENT, LocalSlurm
from train_helpers import ROOT, TINY, WORKERS, history

pytestmark = pytest.mark.slow
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")
JOB_LIMIT_S = 420  # a job that has not ended by then is a hang (a start takes ~1 min on a loaded 2-core box)
EPOCHS = 2
OUTPUTS = ("config.yaml", "history.csv", "summary.json", "per_class_ap.csv", "submission.csv", "loss.png",
           "map.png", "best/model.safetensors")


def submit(cluster: LocalSlurm, log: Path, sbatch: list[str], trainer: list[str], env: dict | None = None) -> str:
    """sbatch cluster/train.sbatch from the repository root, as docs/cluster.md says; returns the job id."""
    job_env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "VOC_PYTHON": sys.executable, **(env or {})}
    return cluster.sbatch(["--cpus-per-task=1", f"--output={log}", *sbatch, "cluster/train.sbatch", *trainer],
                          cwd=ROOT, env=job_env)


def paused(at: str, marker: Path, release: Path | None = None) -> dict:
    """VOC_TRAIN_ENTRY for a run whose rank 0 pauses at `at` on its first start only (--once);
    with `release`, until that file exists instead of until a stop signal."""
    until = f" --release {release}" if release else ""
    return {"VOC_TRAIN_ENTRY": f"tests/paused_run.py --once --pause-at {at} --marker {marker}{until} --"}


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    # Loader workers too: SLURM signals every process of a step, theirs included.
    return ["--shards", str(shards), "--out", str(out), "--epochs", str(EPOCHS), *TINY, *WORKERS, *extra]


def wait_for(condition, cluster: LocalSlurm, job: str, log: Path, what: str) -> None:
    """Poll for an event of a running job (a marker file, a log line); fail within a second if the job
    ends. The job's state costs an RPC to slurmctld (scontrol): asked once a second, not at every look."""
    deadline, asked = time.monotonic() + JOB_LIMIT_S, float("-inf")
    while not condition():
        if time.monotonic() - asked >= 1:
            asked = time.monotonic()
            state = cluster.job(job)["JobState"]
            tail = log.read_text(errors="replace")[-6000:] if log.exists() else "(no log)"
            assert state not in ENDED, f"job {job} {state} before {what}:\n{tail}"
            assert time.monotonic() < deadline, f"no {what} within {JOB_LIMIT_S} s:\n{tail}"
        time.sleep(0.1)


def log_has(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def ended(cluster: LocalSlurm, job: str, log: Path) -> dict[str, str]:
    return cluster.wait_job(job, ENDED, JOB_LIMIT_S, log)


def slurm_starts(out: Path) -> list[dict]:
    return yaml.safe_load((out / "config.yaml").read_text())["slurm"]


def assert_finished_once_each(out: Path) -> None:
    assert [int(row["epoch"]) for row in history(out)] == list(range(1, EPOCHS + 1))
    for name in OUTPUTS:
        assert (out / name).is_file(), f"{name} missing"


def test_time_limit_warning_on_two_nodes_checkpoints_requeues_once_and_finishes_with_world_size_two(
        slurm, shards_dir, tmp_path):
    """SLURM's own time limit sends the warning (--time=1, 50 s early: 10-40 s after the start, by
    slurmctld's 30 s clock) to a 2-node job. Once it has come, the test raises the limit so that the
    requeued start (same job, same limit) is not warned again before it finishes; the first start's
    trainers are told whether the warning came before or after they paused (the script repeats USR1).
    One job for what a `scancel --batch --signal=USR1` job and a 1-node time-limit job checked apart."""
    # Batch 2 per process: 6 updates per epoch, so the stop check at update 4 falls mid-epoch.
    out, log, marker = tmp_path / "run", tmp_path / "job.log", tmp_path / "paused"
    job = submit(slurm, log, ["--nodes=2", "--time=1", "--signal=B:USR1@50"],
                 train_args(shards_dir, out, "--batch-size", "2"), paused("1:1", marker))
    wait_for(lambda: log_has(log, "USR1 (time limit near)"), slurm, job, log, "the time-limit warning")
    slurm.scontrol("update", f"JobId={job}", "TimeLimit=10")
    sent = time.monotonic()
    wait_for(lambda: log_has(log, "resumed from"), slurm, job, log, "the requeued job's resume")
    print(f"\ntime-limit warning -> requeued job resumed: {time.monotonic() - sent:.1f} s")
    info = ended(slurm, job, log)
    text = log.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), text[-6000:]
    assert text.count("USR1 (time limit near)") == 1 and text.count("requeueing job") == 1
    assert "stopped by SIGUSR1" in text and "(epoch 0 done, 4 batches into the next)" in text
    assert text.count("start 1 (restart 0") == 1 and text.count("start 2 (restart 1") == 1  # one log, appended
    assert_finished_once_each(out)
    starts = slurm_starts(out)
    assert [(s["job_id"], s["restart_count"], s["nodes"]) for s in starts] == [(job, 0, "n[1-2]"), (job, 1, "n[1-2]")]
    assert starts[0]["resumed_from"] is None and starts[1]["resumed_from"].endswith("epoch_0001_step_00004")
    # A 2-node job: srun --label prefixes "0: " / "1: " (the node); each node names itself and its global ranks.
    assert "0: node 0 = n1: global ranks 0-0 of 2" in text and "1: node 1 = n2: global ranks 1-1 of 2" in text
    assert "2 process(es)" in text and "run finished" in text
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["world_size"] == 2
    assert len((out / "submission.csv").read_text().splitlines()) == 1 + 17  # every test image once


def trainer_pid(job: str, node: str) -> int:
    """The trainer process (not its launcher, not its loader workers) of `job` on `node`."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            environ = dict(v.split("=", 1) for v in (proc / "environ").read_text().split("\0") if "=" in v)
            cmdline = (proc / "cmdline").read_text()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if environ.get("SLURM_JOB_ID") == job and environ.get("SLURMD_NODENAME") == node \
                and "paused_run.py" in cmdline and "trainer.launch" not in cmdline:
            found[int(proc.name)] = ppid
    trainers = [pid for pid, ppid in found.items() if ppid not in found]  # loader workers are their children
    assert len(trainers) == 1, f"trainer processes of job {job} on {node}: {found}"
    return trainers[0]


def test_killed_trainer_ends_the_job_naming_the_rank_and_a_resubmit_resumes(slurm, shards_dir, tmp_path):
    out, log, marker = tmp_path / "run", tmp_path / "job.log", tmp_path / "paused"
    args = train_args(shards_dir, out)
    job = submit(slurm, log, ["--nodes=2"], args, paused("2:0", marker))  # after epoch 1's checkpoint
    wait_for(marker.exists, slurm, job, log, "the paused run")
    os.kill(trainer_pid(job, "n2"), signal.SIGKILL)
    killed = time.monotonic()
    info = ended(slurm, job, log)
    print(f"\nkill -9 on n2 -> job ended: {time.monotonic() - killed:.1f} s")
    text = log.read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0" and info["Restarts"] == "0", text[-6000:]
    # The launcher names the global rank that died, srun the node; the batch script says what to do.
    assert "error: rank 1 was killed by SIGKILL" in text and "srun: error: n2: task 1: Exited" in text
    assert "the training step failed" in text
    assert [int(row["epoch"]) for row in history(out)] == [1]

    log2 = tmp_path / "resubmitted.log"
    job2 = submit(slurm, log2, ["--nodes=2"], args)
    info2 = ended(slurm, job2, log2)
    assert info2["JobState"] == "COMPLETED", log2.read_text()[-6000:]
    assert "resumed from" in log2.read_text() and "(epoch 1 done, 0 batches into the next)" in log2.read_text()
    assert_finished_once_each(out)
    assert [s["job_id"] for s in slurm_starts(out)] == [job, job2]


def test_no_requeue_for_a_finished_run_past_max_restarts_or_with_bad_arguments(slurm, shards_dir, tmp_path):
    # Three 1-node jobs at once (1 CPU each). The warning comes during the final test of one (the
    # run still finishes: nothing to requeue) and mid-epoch in another, which MAX_RESTARTS=0 keeps
    # from being requeued; the third has a bad flag.
    done_out, done_log, done_marker = tmp_path / "done", tmp_path / "done.log", tmp_path / "done.paused"
    cap_out, cap_log, cap_marker = tmp_path / "capped", tmp_path / "capped.log", tmp_path / "capped.paused"
    bad_log = tmp_path / "bad.log"
    done = submit(slurm, done_log, ["--nodes=1"], train_args(shards_dir, done_out), paused("final", done_marker))
    capped = submit(slurm, cap_log, ["--nodes=1"], train_args(shards_dir, cap_out),
                    {**paused("1:1", cap_marker), "MAX_RESTARTS": "0"})
    bad = submit(slurm, bad_log, ["--nodes=1"], train_args(shards_dir, tmp_path / "bad", "--lr", "-1"))
    for job, marker, log in ((done, done_marker, done_log), (capped, cap_marker, cap_log)):
        wait_for(marker.exists, slurm, job, log, "the paused run")
        slurm.scancel("--batch", "--signal=USR1", job)

    info = ended(slurm, done, done_log)
    text = done_log.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), text[-6000:]
    assert "USR1 (time limit near)" in text and "run finished" in text and "requeueing" not in text
    assert_finished_once_each(done_out)

    info = ended(slurm, capped, cap_log)
    text = cap_log.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "75:0", "0"), text[-6000:]
    assert "not requeued after the time limit: 0 restart(s) already (MAX_RESTARTS=0)" in text
    assert "stopped by SIGUSR1" in text and "requeueing" not in text and not (cap_out / "summary.json").exists()
    assert (cap_out / "checkpoints").is_dir()  # a resubmit would resume from it

    info = ended(slurm, bad, bad_log)
    lines = bad_log.read_text().splitlines()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0"), lines
    assert [line for line in lines if "] batch: " not in line] == ["error: --lr: must be > 0, got -1.0"]
    assert "nothing was started" in lines[-1]


def test_preemption_with_a_grace_time_checkpoints_and_requeues(slurm, shards_dir, tmp_path):
    """A job of the higher-priority partition needs n1: SLURM sends SIGTERM to the training step
    (GraceTime on the default partition, PreemptMode=REQUEUE); the trainers checkpoint, the job is
    requeued and the requeued job resumes mid-epoch."""
    out, log, marker = tmp_path / "run", tmp_path / "job.log", tmp_path / "paused"
    job = submit(slurm, log, ["--nodes=1", "--nodelist=n1", f"--cpus-per-task={CPUS_PER_NODE}"],
                 train_args(shards_dir, out), paused("1:1", marker))
    wait_for(marker.exists, slurm, job, log, "the paused run")
    urgent = slurm.sbatch([f"--partition={URGENT}", "--nodelist=n1", f"--cpus-per-task={CPUS_PER_NODE}",
                           f"--output={tmp_path / 'urgent.log'}", "--wrap", "true"], cwd=tmp_path)
    assert ended(slurm, urgent, tmp_path / "urgent.log")["JobState"] == "COMPLETED"
    info = ended(slurm, job, log)
    text = log.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), text[-6000:]
    assert "stopped by SIGTERM" in text and text.count("requeueing job") == 1 and "after the preemption" in text
    assert "(epoch 0 done, 4 batches into the next)" in text
    assert_finished_once_each(out)


def test_a_frozen_rank_ends_the_job_by_itself_and_it_is_requeued_once(slurm, shards_dir, tmp_path):
    """Rank 1 (node n2) is frozen (SIGSTOP) after epoch 1: rank 0's wait passes --hang-timeout, it
    says so in one line and exits 124, srun ends the step, and the batch script requeues the job once
    (a deadlock need not repeat); the requeued start resumes and finishes every epoch exactly once."""
    out, log, marker, release = tmp_path / "run", tmp_path / "job.log", tmp_path / "paused", tmp_path / "go"
    hang = 30  # above any set-up wait of a loaded box (the loader server's first start: up to ~17 s)
    job = submit(slurm, log, ["--nodes=2"], train_args(shards_dir, out, "--hang-timeout", str(hang)),
                 paused("2:0", marker, release))
    wait_for(marker.exists, slurm, job, log, "the paused run")
    os.kill(trainer_pid(job, "n2"), signal.SIGSTOP)
    release.write_text("go")
    frozen = time.monotonic()
    wait_for(lambda: log_has(log, "requeueing job"), slurm, job, log, "the requeue after the hang")
    print(f"\nrank 1 frozen -> job requeued: {time.monotonic() - frozen:.1f} s (--hang-timeout {hang})")
    info = ended(slurm, job, log)
    text = log.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), text[-6000:]
    # Rank 0 says what it waited for; rank 1, frozen, says nothing or (thawed by SLURM's SIGCONT before
    # the kill) its own one line.
    errors = [line for line in text.splitlines() if "error: rank" in line]  # srun adds its own "srun: error:"
    assert any(re.search(rf"error: rank 0 on \S+ waited \d+ s for a training step .*--hang-timeout {hang} s", line)
               for line in errors), text[-6000:]
    assert len(errors) <= 2 and not any("rank 1" in line and "rank 0" in line for line in errors), errors
    assert "Traceback" not in text and text.count("after a hang") == 1, text[-6000:]
    assert "(epoch 1 done, 0 batches into the next)" in text
    assert_finished_once_each(out)
