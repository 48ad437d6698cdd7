"""One run per folder (trainer/rundir/lock.py) and launches whose processes did not form one group
(trainer/faults/launch_check.py), with real trainer processes."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from train_helpers import ACCELERATE, ROOT, TINY, ddp, env, free_port, kill_launch, single, start, wait_until
from trainer.rundir.layout import RunDir

pytestmark = pytest.mark.slow


def _refused(cmd: list[str], extra_env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode != 0, done.stdout + done.stderr
    return done


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_a_second_run_on_a_folder_in_use_is_refused_at_once_and_a_sigkill_frees_it(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "first.log"
    first = start(single(["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY],
                         paused=("1:0", marker)), log)
    try:
        wait_until(marker.exists, first, log)
        holder = f"host {socket.gethostname()}, pid {first.pid}, since "
        second = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, "--seed", "1"]

        # What ./launch.sh train checks before it starts any process.
        check = _refused([sys.executable, "-m", "trainer.config", *second])
        assert check.returncode == 2 and f"error: --out: {out} is in use by another run ({holder}" in check.stderr
        assert len(check.stderr.strip().splitlines()) == 1, check.stderr

        # One process: one line, exit 2.
        alone = _refused(single(second))
        assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1, alone.stderr
        assert f"is in use by another run ({holder}" in alone.stderr

        # Two processes: the main process refuses and tells the other one; both stop, the reason once.
        both = _refused(ddp(second))
        errors = _error_lines(both.stdout + both.stderr)
        assert len(errors) == 1 and errors[0].startswith(f"error: --out: {out} is in use by another run ({holder}"), \
            both.stdout + both.stderr
        # Both ranks stop on the refusal with 2, except that the launcher, seeing one rank gone first,
        # may stop the other with SIGTERM before its own exit 2 (which comes first is the OS
        # scheduler's choice, so either is right); never a crash of another kind.
        codes = dict(re.findall(r"rank\s*: (\d) \(local_rank: \d\)\s*\n\s*exitcode\s*: (-?\d+) ", both.stderr))
        assert both.returncode != 0 and set(codes) == {"0", "1"} and "2" in codes.values(), both.stderr
        assert set(codes.values()) <= {"2", "-15"}, both.stderr

        # The first run's record is intact: the second wrote nothing.
        assert yaml.safe_load((out / "config.yaml").read_text())["settings"]["seed"] == 3
    finally:
        kill_launch(first)  # the process and its loader worker, as a crash or the OOM killer would
    assert RunDir(out).lock.is_file()  # left behind, but nobody holds it any more
    check = subprocess.run([sys.executable, "-m", "trainer.config", *second], cwd=ROOT, env=env(),
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine --multi_gpu forms a real group")
def test_processes_that_did_not_form_one_group_are_refused_before_anything_is_written(shards_dir, tmp_path):
    out = tmp_path / "run"
    # The command: --multi_gpu on a machine without GPUs, without ACCELERATE_USE_CPU.
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), "trainer/main.py",
           "--shards", str(shards_dir), "--out", str(out), "--epochs", "1", *TINY]
    done = _refused(cmd, {"ACCELERATE_USE_CPU": "false"})
    errors = _error_lines(done.stdout + done.stderr)
    assert len(errors) == 1 and "started 2 processes but they did not form one process group" in errors[0], \
        done.stdout + done.stderr
    assert "./launch.sh train" in errors[0] and "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu" in errors[0]
    assert not out.exists()
