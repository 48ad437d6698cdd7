"""A trainer leaves promptly when it cannot go on: a peer rank died, the user aborted, or its launcher is gone.

Both used to hang in the exit: multiprocessing ends a process's loader workers with SIGTERM,
which they block (trainer.faults.signals), and then waits for them. With a launcher the survivor
stayed 30 s until the launcher's SIGKILL; without one it waited forever.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_helpers import (ACCELERATE, ROOT, TINY, WORKERS, children, ddp, descendants, env, free_port, kill_all,
                           kill_launch, single, start, wait_until, wait_until_gone)
from trainer.data.choose import MAX_DEFAULT_WORKERS
from trainer.faults.exits import EXIT_PEER
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.rundir.lock import holder

pytestmark = pytest.mark.slow


def start_ranks(cmd: list[str], logs: list[Path]) -> list[subprocess.Popen]:
    """The two ranks of a 2-process CPU run started as a scheduler starts one task per rank (srun
    with RANK/WORLD_SIZE, or a node whose peer is on another node): no launcher above them that
    could end a survivor with its own SIGTERM, so what ends it is the trainer's own doing."""
    port = free_port()
    return [subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                             env={**env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                  "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
            for rank, log in enumerate(logs)]


def test_when_a_rank_is_sigkilled_its_peer_exits_by_itself(shards_dir, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "paused"
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    # The bound: with its peer gone, the survivor's one way out in time is to see the broken connection
    # at once. Every other way takes --hang-timeout or longer: the watchdog's (exit 124), gloo's own
    # timeout (--hang-timeout plus a margin), an exit that waits for its loader worker (forever).
    hang = 60  # above any set-up wait of a loaded box (the loader server's first start: up to ~17 s)
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", "--hang-timeout", str(hang), *TINY,
            *WORKERS]
    # Rank 0 pauses before epoch 1's batch 2; rank 1 goes on and waits for it in a collective.
    rank0, rank1 = ranks = start_ranks(single(args, paused=("1:2", marker)), logs)
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not (marker.exists() and marker.read_text().strip()):
            for rank, log in zip(ranks, logs):
                assert rank.poll() is None, f"a rank ended (status {rank.returncode}) before the pause:\n" \
                                            f"{log.read_text()[-6000:]}"
            assert time.monotonic() < deadline, logs[0].read_text()[-6000:]
            time.sleep(0.05)
        assert int(marker.read_text().split()[0]) == rank0.pid
        helpers = descendants(rank0.pid) + descendants(rank1.pid)  # loader worker and forkserver of each
        survivors = descendants(rank1.pid)
        rank0.kill()  # rank 0 alone, as a node failure or the out-of-memory killer would
        killed = time.monotonic()
        try:
            rank1.wait(timeout=hang)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 1 was still running {hang} s (--hang-timeout) after its peer died:\n"
                        f"{logs[1].read_text()[-5000:]}")
        print(f"\nrank 0 killed -> rank 1 exited {rank1.returncode} after {time.monotonic() - killed:.1f} s")
        text = logs[1].read_text()
        # Its own status: 1, "another process failed" (not 124, a timeout; not a signal's death).
        assert rank1.returncode == EXIT_PEER, text[-5000:]
        # ... said in one line, not a traceback.
        assert re.search(r"error: rank 1 on \S+: stopped: another process of the run has gone away \(Connection "
                         r"(closed|reset) by peer", text), text[-5000:]
        assert "Traceback" not in text, text[-5000:]
        # Nothing of the survivor outlives it (its loader worker ignores SIGTERM: it is SIGKILLed at exit).
        wait_until_gone(survivors, timeout=30)  # rank 1's loader processes must not outlive it
    finally:
        kill_all([rank.pid for rank in ranks] + helpers)
        for rank in ranks:
            rank.wait()


def test_a_second_ctrl_c_aborts_the_run_at_once(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "run.log"
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "3", *TINY, *WORKERS, "--batch-size", "2"]
    cmd = single(args, paused=("2:0", marker))
    cmd[2:2] = ["--signals", "2"]  # paused_run option: stay paused until a second signal
    proc = start(cmd, log)
    wait_until(marker.exists, proc, log)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "handled SIGINT" in marker.read_text(), proc, log)  # the first one is recorded
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        kill_launch(proc)
        pytest.fail("the aborted run hung in its exit, waiting for its loader worker")
    text = log.read_text()
    assert proc.returncode != 0 and "KeyboardInterrupt" in text, text[-4000:]
    assert latest_checkpoint(out)[0].name == "epoch_0001"  # aborted: no stop checkpoint in epoch 2


def test_a_stop_signal_repeated_while_the_trainer_exits_does_not_kill_it():
    """cluster/train.sbatch repeats its time-limit warning (SIGUSR1) every 5 s until the step ends: one
    that reaches a trainer after its stop handler is gone but before it has exited must not kill it
    (seen on a loaded box: status 138, "training step failed", no requeue). A normal end restores the
    handlers (SIGINT's as they were); Ctrl-C still ends an exiting process."""
    # SIGINT's handler as this process started: Python's default_int_handler, or SIG_IGN when the suite
    # itself was started in the background of a non-interactive shell (POSIX ignores SIGINT there).
    script = """
import os, signal, subprocess
started_with = signal.getsignal(signal.SIGINT)
from trainer.faults.signals import StopSignal
with StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGUSR1)  # delivered before kill() returns: the handler records it
assert stop.received == signal.SIGUSR1
os.kill(os.getpid(), signal.SIGTERM)
# The batch script's repeats, until this process is gone: many land during the interpreter's exit,
# which resets Python-level handlers to the default action (death) in its last steps.
subprocess.Popen(["sh", "-c", f"while kill -USR1 {os.getpid()} 2>/dev/null; do :; done"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("exited by itself", signal.getsignal(signal.SIGINT) is started_with)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "exited by itself True"), done.stderr


@pytest.mark.parametrize("processes", [2, 1])
def test_a_run_whose_accelerate_launch_is_killed_saves_releases_its_lock_and_exits(shards_dir, tmp_path, processes):
    """`accelerate launch` killed mid-epoch: its ranks (each in a session of its own with several
    processes; one process: a child whose stderr the launcher was reading through a pipe) stop at the
    next stop check with a checkpoint, say so, and leave the lock free."""
    out, marker, release, log = tmp_path / "run", tmp_path / "paused", tmp_path / "release", tmp_path / "run.log"
    # --workers unset: the machine's CPUs shared by its processes, which PyTorch has nothing to warn about.
    tiny = TINY[:TINY.index("--workers")] + TINY[TINY.index("--workers") + 2:]
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *tiny, "--batch-size", "2"]
    if processes == 2:
        cmd = ddp(args, paused=("1:1", marker, release))
    else:
        cmd = [ACCELERATE, "launch", "--num_processes", "1", "--cpu", "--mixed_precision", "no", "--dynamo_backend",
               "no", *single(args, paused=("1:1", marker, release))[1:]]
    proc = start(cmd, log)
    run_processes: list[int] = []
    try:
        wait_until(marker.exists, proc, log)
        run_processes = descendants(proc.pid)
        assert len(children(proc.pid)) == processes, run_processes
        # Several processes: the launcher's whole group, which holds none of its ranks. One process
        # shares the launcher's group (a group kill ends the run outright): the launcher alone.
        (os.killpg if processes == 2 else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait()
        release.touch()
        print(f"\nlauncher killed -> every process of the run gone {wait_until_gone(run_processes, log):.1f} s after "
              "rank 0 went on")
    finally:
        kill_all(run_processes)
    text = log.read_text()
    assert re.search(rf"the launcher \(pid {proc.pid}\) is gone: saved epoch \d+(, update \d+)?; resume with "
                     r"--resume", text), text[-5000:]
    assert "Traceback" not in text and "Warning" not in text, text[-5000:]
    assert latest_checkpoint(out) is not None and holder(out) is None
    workers = max(1, min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)) // processes))
    assert f", {workers} loader worker(s) per process (--workers unset" in text, text[-5000:]
