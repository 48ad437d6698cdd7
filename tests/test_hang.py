"""No wait lasts forever: --hang-timeout ends a stuck process in one line (trainer/faults/watchdog.py), and
the launch ends with the fault's exit status (trainer/faults/exits.py, trainer/launch.py).

The watchdog is checked in a small process stuck for good in C (a lock nobody releases); the run
with a real frozen rank (SIGSTOP, as a stopped node or a debugger would leave it) is checked through
`python -m trainer.launch`, the launcher launch.sh and the cluster scripts use. Every wait here is
for an event (a marker file, the process's end), bounded by a limit far above the expected time.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_helpers import (ROOT, TINY, WORKERS, children, ddp, env, history, kill_launch, run, running, start,
                           wait_until)
from trainer.faults.exits import EXIT_BAD_INPUT, EXIT_HANG, EXIT_IO, EXIT_PEER, Identity, as_fault
from trainer.launch import exit_status
from trainer.config import ConfigError
from trainer.faults.watchdog import STOP_GRACE_S

STUCK = """
import signal, sys, threading
from pathlib import Path
import trainer.faults.watchdog
from trainer.faults.exits import Identity
from trainer.faults.watchdog import Watchdog
if len(sys.argv) > 4:
    trainer.faults.watchdog.STOP_GRACE_S = float(sys.argv[4])  # the grace after a stop signal, shorter for the test
signal.signal(signal.SIGTERM, lambda *_: None)  # recorded and ignored, as the trainer's handler does
held = threading.Lock()
held.acquire()
with Watchdog(float(sys.argv[1])) as watchdog:
    watchdog.identify(Identity(rank=1, world=2, main=False, host="node7"), Path(sys.argv[2]) / "stacks-rank1.txt")
    with watchdog.waiting("a lock nobody releases", phase="test", epoch=7):
        Path(sys.argv[3]).write_text("waiting")
        held.acquire()  # blocks in C for good
"""


def stuck(tmp_path: Path, timeout: float, grace: float = STOP_GRACE_S) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "waiting"
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(timeout), str(tmp_path), str(marker), str(grace)],
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def test_a_wait_past_the_limit_ends_the_process_in_one_line_with_its_stacks(tmp_path):
    proc, _ = stuck(tmp_path, timeout=2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_HANG, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r"error: rank 1 on node7 waited \d+ s for a lock nobody releases \(phase test, epoch 7\) "
                    r"and gives up \(--hang-timeout 2 s\)", lines[0]), lines[0]
    stacks = (tmp_path / "stacks-rank1.txt").read_text()
    assert str(tmp_path / "stacks-rank1.txt") in lines[0]
    assert "Current thread" in stacks and "hang-watchdog" not in lines[0] and "<string>" in stacks, stacks


def test_a_stop_signal_during_a_stuck_wait_ends_it_within_the_grace(tmp_path):
    # --hang-timeout 600: only the signal can end this wait in time (the launcher's SIGTERM after a peer
    # failed reaches a rank stuck in C, whose Python handler cannot run). The grace is STOP_GRACE_S (20 s)
    # in the trainer; 3 s here, the same rule in less time.
    grace = 3
    proc, marker = stuck(tmp_path, timeout=600, grace=grace)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the event: the process is inside the declared wait
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=grace + 60)
        waited = time.monotonic() - signalled
    finally:
        proc.kill()
    assert proc.returncode == EXIT_HANG, err
    assert err.count("\n") == 1 and f"SIGTERM came and the wait did not end within {grace} s" in err
    assert waited >= grace, waited  # the wait in progress was given its grace, not cut at once


def test_the_launch_status_is_the_first_failures_cause():
    # A hang found by rank 0; rank 1 lost its peer in the same poll: the hang decides.
    assert exit_status({0: (EXIT_HANG, 100), 1: (EXIT_PEER, 100)}) == (EXIT_HANG, [])
    # The same second boundary straddled by one poll still counts as one group.
    assert exit_status({0: (EXIT_PEER, 101), 1: (EXIT_IO, 100)})[0] == EXIT_IO
    # A frozen rank killed by the launcher 30 s after the first failure is named, but does not decide.
    status, lines = exit_status({0: (EXIT_HANG, 100), 1: (-signal.SIGKILL, 130)})
    assert status == EXIT_HANG and len(lines) == 1 and "grace period" in lines[0] and "30 s later" in lines[0]
    # Ranks the launcher shut down with SIGTERM while they were ending on their own say nothing more.
    assert exit_status({0: (EXIT_IO, 100), 1: (-signal.SIGTERM, 100)}) == (EXIT_IO, [])
    # Killed by the kernel first: that is the cause, 128 + 9 as shells say.
    status, lines = exit_status({0: (EXIT_PEER, 100), 1: (-signal.SIGKILL, 100)})
    assert status == 137 and "rank 1 was killed by SIGKILL" in lines[0]


def test_faults_become_one_line_with_their_status():
    main = Identity(rank=0, world=2, main=True, host="n1")
    other = Identity(rank=1, world=2, main=False, host="n2")
    full = as_fault(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/a/checkpoints/.tmp-epoch_0002"), main)
    assert full.status == EXIT_IO
    assert full.line.startswith("rank 0 on n1: cannot write /runs/a/checkpoints/.tmp-epoch_0002: no space left "
                                "on device; make room"), full.line
    # Settings are found alike on every rank: the main process says it, the others only exit 2.
    assert (as_fault(ConfigError("--x: bad"), main).line, as_fault(ConfigError("--x: bad"), other).line) == ("--x: bad", None)
    assert as_fault(ConfigError("--x"), other).status == EXIT_BAD_INPUT
    gone = as_fault(RuntimeError("[pair.cc:534] Connection closed by peer [127.0.0.1]:1234"), other)
    assert gone.status == EXIT_PEER and gone.line.startswith("rank 1 on n2: stopped: another process")
    assert as_fault(ValueError("a bug"), main) is None  # its traceback is the report
    assert as_fault(OSError(errno.ENOENT, "No such file", "x"), main) is None


def launch_until_hang(cmd: list[str], log: Path, ready, then, hang: int) -> tuple[int, str, list[str]]:
    """Start a launch, wait for `ready()`, call `then(launcher process)`, wait for the launch to end by
    itself (bound: the limit, plus the launcher's 30 s grace for a frozen rank, plus start-up slack).
    Returns its exit status, its output and its `error:` lines."""
    proc = start(cmd, log)
    try:
        wait_until(ready, proc, log)
        then(proc)
        proc.wait(timeout=hang + 30 + 120)
    finally:
        kill_launch(proc)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    return proc.returncode, text, [line for line in text.splitlines() if line.startswith("error:")]


def written(marker: Path):
    return lambda: marker.exists() and marker.read_text().strip()


@pytest.mark.slow
def test_a_frozen_rank_ends_the_run_by_itself_and_it_resumes(shards_dir, tmp_path):
    out, marker, release, log = tmp_path / "run", tmp_path / "paused", tmp_path / "go", tmp_path / "run.log"
    hang = 20  # above any set-up wait of a loaded box (no loader server to start here)
    # TINY: no loader workers, no server start: the freeze is all that can make a wait long.
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "3", "--hang-timeout", str(hang), *TINY]

    # Rank 0 pauses before epoch 2's first batch (epoch 1 and its checkpoint are done); rank 1 then
    # waits for it in the gradient all-reduce. Freeze rank 1, let rank 0 go on into that all-reduce.
    def freeze_rank_1(launcher) -> None:
        rank0 = int(marker.read_text().split()[0])
        os.kill(next(pid for pid in children(launcher.pid) if pid != rank0), signal.SIGSTOP)
        release.write_text("go")

    status, text, errors = launch_until_hang(ddp(args, paused=("2:0", marker, release), ours=True), log,
                                             written(marker), freeze_rank_1, hang)
    assert status == EXIT_HANG, text[-4000:]
    assert errors[0].startswith("error: rank 0 on ") and "a training step" in errors[0] and "epoch 2" in errors[0] \
        and f"--hang-timeout {hang} s" in errors[0], text[-4000:]
    assert (out / "stacks-rank0.txt").is_file()
    assert "did not end within the launcher's grace period" in errors[-1], errors

    # The run resumes from epoch 1's checkpoint and trains every epoch exactly once.
    run(ddp(["--shards", str(shards_dir), "--out", str(out), "--resume"], ours=True))
    assert [row["epoch"] for row in history(out)] == ["1", "2", "3"]
    assert (out / "summary.json").is_file()


@pytest.mark.slow
def test_a_frozen_loader_worker_ends_the_run_by_itself_and_it_resumes(shards_dir, tmp_path):
    """The hang that was seen: rank 0 waits for its eval loader's worker, which never produces
    anything; rank 1 waits for rank 0 in the evaluation's gather."""
    out, marker, log = tmp_path / "run", tmp_path / "frozen", tmp_path / "run.log"
    hang = 30  # above any set-up wait of a loaded box (the loader server's first start: up to ~17 s)
    cmd = ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", "--hang-timeout", str(hang), *TINY,
               *WORKERS], ours=True)
    at = cmd.index("trainer/main.py")
    cmd[at:at + 1] = ["tests/paused_run.py", "--freeze-eval-worker", "val", "--marker", str(marker), "--"]
    status, text, errors = launch_until_hang(cmd, log, written(marker), lambda launcher: None, hang)
    assert status == EXIT_HANG, text[-4000:]
    # Rank 0 names the loader; rank 1, in the gather since a moment later, says its own line (its limit
    # may pass in the same second) or that rank 0 has gone away: one line each, in either order.
    assert any(re.match(r"error: rank 0 on \S+ waited \d+ s for the next batch of the val eval loader \(phase "
                        r"evaluate val, epoch 1, batch 0\)", line) for line in errors), errors
    assert len(errors) == 2 and sum(line.startswith("error: rank 1 ") for line in errors) == 1, errors
    assert not running(int(marker.read_text().split()[0])), "the frozen worker outlived its rank"
    assert "leaked semaphore" not in text, text[-4000:]  # os._exit skips their release: the watchdog does it

    run(ddp(["--shards", str(shards_dir), "--out", str(out), "--resume"], ours=True))
    assert [row["epoch"] for row in history(out)] == ["1", "2"]
