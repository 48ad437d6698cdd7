"""A suite of report runs as ONE SLURM job array on a real 2-node SLURM on localhost (tests/slurm_cluster.py).

`python -m trainer.suite SUITE --launcher slurm` as a user types it on a login node, SUITE being four
of the report's own recipes (configs/report/; the whole report is eight 227-px runs, minutes more of
the same path on a 2-core box): the three that need no download (alexnet_pretrained's weights are
not on the box: said, not submitted), one epoch each, go out as one throttled array; a second call while the tasks run
submits nothing; one task is warned by a real time limit, checkpoints and is requeued; --status
shows the states; a finished run submitted again by hand changes nothing; a run whose task ended
without finishing is submitted again; trainer.report then writes REPORT.md with every run. The task that is warned is
paused in its first batch until the warning comes (tests/paused_run.py --only-run): no sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from shards.pack import PackOptions, pack
from shards.synth import DEFAULT_BACKGROUNDS, generate
from slurm_cluster import LocalSlurm
from train_helpers import ROOT

pytestmark = pytest.mark.slow
ARRAY_LIMIT_S = 600  # 3 runs of ~20 s, 2 at once, and one requeue: a few minutes on a loaded 2-core box
WARNED = "simple"  # the run whose task gets the time-limit warning
NO_WEIGHTS = "alexnet_pretrained"
SUBMITTED = ["simple", "ablation_1_basenet", "final"]
REPORT_RECIPES = ROOT / "configs" / "report"


@pytest.fixture(scope="module")
def report_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A suites file with one suite, `some_report`: the report's own recipe files for four of its runs."""
    path = tmp_path_factory.mktemp("suites") / "suites.yaml"
    runs = {name: str(REPORT_RECIPES / f"{name}.yaml") for name in ["simple", NO_WEIGHTS, *SUBMITTED[1:]]}
    path.write_text(yaml.safe_dump({"some_report": {"about": "four report runs", "runs": runs}}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def report_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train, 4 val and 4 test images (the shared fixture has 24/16/17): the report's recipes are
    227-px networks on one CPU each, and what is checked here (the array, the requeue, the states, the
    report) does not depend on how many images they see. 290 s -> 262 s for this test alone."""
    voc = tmp_path_factory.mktemp("report_voc") / "VOCdevkit"
    generate(voc, {"train": 8, "val": 4, "test": 4}, seed=0,
             backgrounds_dir=DEFAULT_BACKGROUNDS if DEFAULT_BACKGROUNDS.is_dir() else None)
    out = tmp_path_factory.mktemp("report_packed") / "shards"
    pack([voc], out, PackOptions(samples_per_shard=4), Console(quiet=True))
    return out


def suite(cluster: LocalSlurm, runs: Path, suites: Path, *extra: str, env: dict | None = None) -> tuple[int, str]:
    """python -m trainer.suite some_report ... as a subprocess with the cluster's SLURM_CONF; (status, output)."""
    done = subprocess.run([sys.executable, "-m", "trainer.suite", "some_report", "--suites", str(suites), "--runs",
                           str(runs), *extra],
                          cwd=runs.parent, env={**cluster.env, **(env or {})}, capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout + done.stderr


def wait(condition, what: str, where: Path) -> None:
    deadline = time.monotonic() + ARRAY_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                             for p in sorted(where.glob("*.out")))
            raise AssertionError(f"no {what} within {ARRAY_LIMIT_S} s:\n{logs}")
        time.sleep(0.5)  # some conditions ask slurmctld (squeue): not more often than this


def _seconds(runtime: str) -> int:
    """SLURM's RunTime ([D-]HH:MM:SS) in seconds."""
    days, _, clock = runtime.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def test_report_suite_as_one_job_array_with_a_requeue_then_their_report(slurm, report_shards, report_suite, tmp_path):
    runs, marker = tmp_path / "runs", tmp_path / "paused"
    submit_args = ["--shards", str(report_shards), "--launcher", "slurm", "--parallel", "2",
                   "--sbatch-args", "--cpus-per-task=1 --time=30 --signal=B:USR1@300", "--epochs", "1", "--workers", "0"]
    # What every task inherits through sbatch: the test's Python, one thread each, and rank 0 of the
    # WARNED run pausing at its first batch until a stop signal (once: not after its requeue).
    task_env = {"VOC_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "VOC_TRAIN_ENTRY": f"tests/paused_run.py --once --only-run {WARNED} --pause-at 1:0 --marker {marker} --"}
    runs.mkdir()

    # 1. One array of the three runs, at most 2 at once; the run without weights is said and left out.
    code, out = suite(slurm, runs, report_suite, *submit_args, env=task_env)
    assert code == 1, out  # 1: a run could not be submitted (no weights), the rest were
    assert f"{NO_WEIGHTS}: no weights" in out and "submitted job array" in out and "3 task(s), at most 2 at once" in out
    record = [json.loads(line) for line in (runs / ".slurm" / "arrays.jsonl").read_text().splitlines()]
    assert len(record) == 1 and record[0]["runs"] == SUBMITTED
    array = record[0]["array_id"]
    assert "--array=0-2%2" in record[0]["sbatch"]
    log = Path(record[0]["log"].replace("%a", "0"))  # the WARNED run's task
    wait(marker.exists, f"the {WARNED} run's pause in its first batch", runs / ".slurm")

    # 2. Called again while the tasks are queued or running: nothing is submitted twice.
    code, again = suite(slurm, runs, report_suite, *submit_args, env=task_env)
    assert f"{WARNED}: running as task {array}_0; not submitted again" in again, again
    assert "nothing to submit" in again and "submitted job array" not in again
    assert len((runs / ".slurm" / "arrays.jsonl").read_text().splitlines()) == 1

    # 3. A real time limit for the paused task: the warning, a checkpoint, a requeue of that task alone. The
    #    limit is set 4-5 minutes after its run time so far: the warning (300 s before it) is due at once and
    #    comes at slurmctld's next time-limit check (every 30 s), leaving minutes for the checkpoint on a loaded
    #    box. (+6 minutes let the warning wait up to a minute more for its due time.)
    limit = _seconds(slurm.job(f"{array}_0")["RunTime"]) // 60 + 5
    slurm.scontrol("update", f"JobId={array}_0", f"TimeLimit={limit}")
    wait(lambda: "USR1 (time limit near)" in log.read_text(errors="replace"), "time-limit warning", runs / ".slurm")
    slurm.scontrol("update", f"JobId={array}_0", "TimeLimit=30")  # its second start is not warned again
    code, status = suite(slurm, runs, report_suite, "--status")
    assert code == 1 and WARNED in status, status

    # 4. The array ends with every run finished; the warned one resumed once in the same task.
    wait(lambda: not [row for row in slurm.squeue() if row.startswith(array)], "end of the array", runs / ".slurm")
    text = log.read_text()
    assert text.count("requeueing job") == 1 and "stopped by SIGUSR1" in text and "resumed from" in text, text[-4000:]
    for name in SUBMITTED:
        assert (runs / name / "summary.json").is_file(), (Path(record[0]["log"].replace("%a", str(
            SUBMITTED.index(name)))).read_text()[-3000:])
    starts = yaml.safe_load((runs / WARNED / "config.yaml").read_text())["slurm"]
    assert [s["restart_count"] for s in starts] == [0, 1] and starts[0]["job_id"] == starts[1]["job_id"]
    assert not (runs / NO_WEIGHTS).exists()

    # 5. --status from the directories alone; a third call submits nothing; the report has every run.
    #    The batch script on a finished run (submitted again by hand): the trainer changes nothing, the job
    #    says the run is finished and ends 0.
    before = (runs / WARNED / "summary.json").stat().st_mtime_ns
    again_log = tmp_path / "again.log"
    job = slurm.sbatch(["--cpus-per-task=1", f"--output={again_log}", "cluster/train.sbatch",
                        *json.loads(Path(record[0]["tasks_file"]).read_text().splitlines()[0])], cwd=ROOT,
                       env={"VOC_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    info = slurm.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), ARRAY_LIMIT_S, again_log)
    text = again_log.read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0") and "run finished" in text, text
    assert "is finished" in text and (runs / WARNED / "summary.json").stat().st_mtime_ns == before
    code, status = suite(slurm, runs, report_suite, "--status")
    assert code == 1 and "3 done, 1 not started" in status, status  # alexnet_pretrained never ran
    code, third = suite(slurm, runs, report_suite, *submit_args)
    assert "nothing to submit" in third and third.count("finished before") == 3, third
    # A run whose task ended without finishing (here: its summary.json deleted) is submitted again, saying so;
    # it resumes from its last checkpoint (the last epoch's) and runs only the final test.
    (runs / WARNED / "summary.json").unlink()
    code, fourth = suite(slurm, runs, report_suite, *submit_args)
    assert f"{WARNED}: task {array}_0 ended without finishing" in fourth and "submitted again" in fourth, fourth
    assert "1 task(s), at most 2 at once" in fourth
    second = json.loads((runs / ".slurm" / "arrays.jsonl").read_text().splitlines()[1])
    assert second["runs"] == [WARNED]
    wait(lambda: not [row for row in slurm.squeue() if row.startswith(second["array_id"])], "end of the second array",
         runs / ".slurm")
    assert json.loads((runs / WARNED / "summary.json").read_text())["epochs"] == 1
    report = runs / "REPORT.md"
    done = subprocess.run([sys.executable, "-m", "trainer.report", str(runs), "--out", str(report)], cwd=ROOT,
                          env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    table = report.read_text()
    for name in SUBMITTED:
        summary = json.loads((runs / name / "summary.json").read_text())
        assert name in table and f"{summary['test_map']:.4f}" in table, name
