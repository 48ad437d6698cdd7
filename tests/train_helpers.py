"""Launching the trainer from tests the way users do: `accelerate launch` (2 CPU processes, gloo)
or `python trainer/main.py`, as real subprocesses."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
LAUNCH = str(ROOT / "launch.sh")
# launch.sh sets up .venv when it is missing or stale (minutes): its tests run only where it is ready.
LAUNCH_SH_READY = pytest.mark.skipif(
    not (ROOT / ".venv" / ".installed-pyproject").is_file()
    or (ROOT / ".venv" / ".installed-pyproject").read_bytes() != (ROOT / "pyproject.toml").read_bytes(),
    reason="launch.sh would first set up .venv (./launch.sh setup)")

# Small enough for a shared 2-core box: vocnet (global pooling) at 32 px, 4 images per process.
# The streaming loader, in the training process: a process's first loader start with workers waits
# for their server's imports (~4 s, shards/workers.py). Tests of what loader workers do under
# signals and faults add WORKERS. tests/test_train_device.py runs the device loader,
# tests/test_compile.py the default choice.
WORKERS = ["--workers", "1"]
TINY = ["--model", "vocnet", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--optimizer", "adam",
        "--lr", "0.003", "--augment", "none", "--test-frequency", "1", "--seed", "3", "--loader", "stream"]


def env() -> dict:
    # One thread per process: 2 processes on 2 cores; unbuffered so a killed run's log is complete.
    # --compile in-process: inductor's pool of compile workers (each importing torch) cost 75 s
    # against 38 s for tests/test_compile.py on the 2-core box.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "ACCELERATE_USE_CPU": "true",
            "TORCHINDUCTOR_COMPILE_THREADS": "1"}


def free_port() -> int:
    # Other suites may launch DDP at the same time: never rely on the default port 29500.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp(args: list[str], paused: tuple[str, Path] | None = None, ours: bool = False) -> list[str]:
    """The docs/NOTES.md command for real 2-process DDP on CPU (`paused`: see `single`). ours: through
    `python -m trainer.launch` (accelerate launch minus its traceback: what launch.sh and the cluster use)."""
    launcher = [sys.executable, "-m", "trainer.launch"] if ours else [ACCELERATE, "launch"]
    return [*launcher, "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            *_entry(args, paused)]


def single(args: list[str], module: bool = False, paused: tuple[str, Path] | None = None) -> list[str]:
    """One process. paused=("EPOCH:BATCH", marker): run through tests/paused_run.py, which stops
    rank 0 before that batch, writes the marker and waits for a stop signal."""
    if module:
        return [sys.executable, "-m", "trainer.main", *args]
    return [sys.executable, *_entry(args, paused)]


def _entry(args: list[str], paused: tuple | None) -> list[str]:
    if paused is None:
        return ["trainer/main.py", *args]
    at, marker, *release = paused  # (at, marker) or (at, marker, release file): see tests/paused_run.py
    return ["tests/paused_run.py", "--pause-at", at, "--marker", str(marker),
            *(["--release", str(release[0])] if release else []), "--", *args]


def paused_entry(folder: Path, at: str, marker: Path, release: Path | None = None) -> Path:
    """A training script for launch.sh's VOC_TRAIN_SCRIPT: tests/paused_run.py pausing rank 0 before
    batch `at` ("EPOCH:BATCH"; `release`: see _entry). launch.sh checks the trainer's arguments before
    it launches, so paused_run's own come from this file, not the command line."""
    script = folder / "paused_entry.py"
    own = ["--pause-at", at, "--marker", str(marker), *(["--release", str(release)] if release else [])]
    script.write_text(
        "import runpy, sys\n"
        f"sys.argv = [{str(ROOT / 'tests' / 'paused_run.py')!r}, *{own!r}, '--', *sys.argv[1:]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return script


def run(cmd: list[str], timeout: float = 240) -> str:
    """Run to completion; fail with the output when the exit status is not 0. Returns stdout+stderr."""
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{output[-15000:]}"
    return output


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start in its own process group (so the whole launch can be signalled, like a scheduler does)."""
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every process below pid (Linux /proc). torchrun starts each rank in a session of its own,
    so signalling the launcher's process group does not reach the ranks."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that forked it
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return [p for c in children for p in (c, *descendants(c))]


def kill_launch(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL the launcher and every rank and loader worker under it, as a node failure would, and
    wait until all of them have exited: only then are their files closed (a run's lock is an flock
    its loader workers share), so what a test checks next sees what a user sees after the crash."""
    pids = [proc.pid, *descendants(proc.pid)]
    kill_all(pids)
    proc.wait()
    wait_until_gone(pids[1:], timeout=timeout)  # the others are not our children: polled in /proc


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; [] once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def running(pid: int) -> bool:
    """False once the process has exited (gone, or a zombie waiting for its parent)."""
    return _stat(pid)[:1] not in ([], ["Z"], ["X"])


def children(pid: int) -> list[int]:
    """The direct children of pid (a launcher's: its ranks)."""
    return [child for child in descendants(pid) if _stat(child)[1:2] == [str(pid)]]


def wait_until_gone(pids: list[int], log: Path | None = None, timeout: float = 120) -> float:
    """Wait until every one of `pids` (not our children: a killed launcher's ranks) has exited; the
    seconds it took. Fails, with the end of `log`, when one is still running after `timeout`."""
    start = time.monotonic()
    while left := [pid for pid in pids if running(pid)]:
        assert time.monotonic() < start + timeout, f"still running after {timeout} s: {left}\n" + \
            (log.read_text()[-5000:] if log else "")
        time.sleep(0.05)
    return time.monotonic() - start


def kill_all(pids: list[int]) -> None:
    """SIGKILL whatever of `pids` is left (a failed test must not leave a run behind)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended (status {proc.returncode}) before the condition:\n{log.read_text()[-6000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-6000:]}"
        time.sleep(0.05)


def history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def signal_when_paused(cmd: list[str], marker: Path, log: Path, sig: signal.Signals, *,
                       every_process: bool = False) -> subprocess.Popen:
    """Start a paused run (see `single`), wait for its marker, send `sig` to the launched process
    (every_process: to the launcher, its ranks and their loader workers, as SLURM does) and wait
    for the run to end. Returns the finished process; its output is in `log`."""
    proc = start(cmd, log)
    wait_until(marker.exists, proc, log)
    for pid in [proc.pid, *descendants(proc.pid)] if every_process else [proc.pid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # a short-lived helper process that has gone meanwhile
            pass
    proc.wait(timeout=120)
    return proc
