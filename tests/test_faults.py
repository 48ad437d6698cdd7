"""A trainer leaves promptly when it cannot go on: a peer rank died, or the user aborted.

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

import pytest

from train_helpers import TINY, WORKERS, ddp, kill_launch, single, start, wait_until
from trainer.rundir.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow


def test_when_a_rank_is_sigkilled_its_peer_exits_by_itself(shards_dir, tmp_path):
    out, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "run.log"
    args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY, *WORKERS]
    # Rank 0 pauses before epoch 1's batch 2; rank 1 goes on and waits for it in a collective.
    proc = start(ddp(args, paused=("1:2", marker)), log)
    wait_until(lambda: marker.exists() and marker.read_text().strip(), proc, log)
    os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)  # rank 0 alone, not its loader worker
    proc.wait(timeout=240)
    text = log.read_text()
    # The launcher's report: rank 0 was killed; rank 1 was not SIGKILLed by the launcher after its
    # 30 s grace period (exit -9). Rank 0's sockets close with it (its loader workers come from a
    # forkserver and hold none of them; forked ones kept them open for seconds), so rank 1 fails at
    # once, and either exits on its own (1) or is still in its exit when the launcher's SIGTERM,
    # sent as soon as it sees rank 0 die, ends it (-15, the stop handler already gone).
    failures = dict(re.findall(r"rank\s+: (\d) \(local_rank: \d\)\n\s+exitcode\s+: (-?\d+)", text))
    assert failures.get("0") == "-9" and failures.get("1") in ("1", "-15"), text[-5000:]
    # ... and says so in one line (printed before its stop handler is gone), not a traceback.
    assert re.search(r"error: rank 1 on \S+: stopped: another process of the run has gone away \(Connection "
                     r"(closed|reset) by peer", text), text[-5000:]
    assert 'trainer/main.py", line' not in text, text[-5000:]  # no rank's traceback (the launcher's own is there)


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
    handlers; Ctrl-C still ends an exiting process."""
    script = """
import os, signal, subprocess
from trainer.faults.signals import StopSignal
with StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGUSR1)  # delivered before kill() returns: the handler records it
assert stop.received == signal.SIGUSR1
os.kill(os.getpid(), signal.SIGTERM)
# The batch script's repeats, until this process is gone: many land during the interpreter's exit,
# which resets Python-level handlers to the default action (death) in its last steps.
subprocess.Popen(["sh", "-c", f"while kill -USR1 {os.getpid()} 2>/dev/null; do :; done"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("exited by itself", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "exited by itself True"), done.stderr
