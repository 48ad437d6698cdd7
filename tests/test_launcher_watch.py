"""Which processes watch a launcher, and that the watch sees a real process end (pidfd), however
it ends, and silences an output pipe its death left without a reader. The runs whose launcher is
killed are in tests/test_train_ddp.py and tests/test_launcher_gone.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainer.faults.launcher import LAUNCHED_BY, LauncherWatch, launcher_pid

WAIT_S = 30  # a deadline for the event, never a pause before it


def test_a_plain_python_process_has_no_launcher(monkeypatch):
    for name in LAUNCHED_BY:
        monkeypatch.delenv(name, raising=False)
    assert launcher_pid() is None
    assert not LauncherWatch(None).gone


@pytest.mark.parametrize("name", LAUNCHED_BY)
def test_a_launched_process_watches_its_parent(monkeypatch, name):
    monkeypatch.setenv(name, "x")
    assert launcher_pid() == os.getppid()


@pytest.mark.parametrize("how", ["SIGKILL", "exit"])
def test_the_watch_sees_its_launcher_end(how):
    launcher = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    watch = LauncherWatch(launcher.pid)
    assert not watch.gone
    if how == "SIGKILL":
        launcher.kill()
    else:
        launcher.stdin.close()  # it reads to the end, then exits 0
    launcher.wait()
    assert watch.wait(WAIT_S), f"the watch did not see pid {launcher.pid} end within {WAIT_S} s"


def test_a_launcher_gone_before_the_watch_starts_is_gone_at_once():
    launcher = subprocess.Popen([sys.executable, "-c", "pass"])
    launcher.wait()  # reaped: its pid names no process any more
    assert LauncherWatch(launcher.pid).gone


def test_an_output_pipe_left_without_a_reader_is_pointed_at_devnull():
    """accelerate's one-process launch reads the trainer's stderr through a pipe: once it is killed,
    a write there would fail with EPIPE in the middle of the rank's stop. Run in a child process,
    which can lose its stderr's reader without harm to pytest."""
    code = (
        "import os, subprocess, sys\n"
        "from trainer.faults.launcher import LauncherWatch\n"
        "read, write = os.pipe()\n"
        "os.dup2(write, 2)\n"
        "launcher = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE,"
        " pass_fds=(read,))\n"
        "os.close(read)\n"  # the launcher holds the only reading end now
        "watch = LauncherWatch(launcher.pid)\n"
        "launcher.kill(); launcher.wait()\n"
        f"assert watch.wait({WAIT_S})\n"
        "os.write(2, b'written after the launcher died\\n')\n"  # EPIPE without the watch
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
