"""A real 2-node SLURM cluster on localhost for the tests: munged, slurmctld and two slurmd (n1, n2).

Everything lives in one folder of its own (config, munge key and socket, state, spool, logs) and the
ports are free ones, so it touches no system SLURM or munge and two test sessions can run side by side.
Debian's slurm-wlm and munge packages, root (slurmd runs jobs as root here) and `127.0.0.1 n1 n2` in
/etc/hosts (added when missing) are needed: `why_not()` says which is missing, for a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
CPUS_PER_NODE = 2
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue")
URGENT = "urgent"  # a partition whose jobs preempt the default partition's (PreemptMode=REQUEUE)
GRACE_S = 60  # SIGTERM to a preempted job's steps, then this long before SIGKILL
HOSTS_LINE = "127.0.0.1 " + " ".join(NODES)
START_LIMIT_S = 60  # daemons up and both nodes idle (about 3 s on a 2-core box)


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def why_not() -> str | None:
    """None when this machine can run the cluster, else the reason (for pytest.skip)."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if _find(name) is None]
    if missing:
        return (f"SLURM tests need Debian's slurm-wlm and munge ({', '.join(missing)} not found); "
                "`./launch.sh test` installs them when run as root with apt-get")
    if os.geteuid() != 0:
        return "SLURM tests need root (slurmd runs the test jobs as root; /etc/hosts needs '127.0.0.1 n1 n2')"
    return None


def ensure_hosts(hosts: Path = Path("/etc/hosts")) -> None:
    """Node names resolve as on a real cluster (`scontrol show hostnames` gives n1, n2): idempotent."""
    try:
        for name in NODES:
            socket.gethostbyname(name)
        return
    except OSError:
        pass
    with open(hosts, "a") as fh:
        fh.write(f"\n{HOSTS_LINE}  # voc-trainer SLURM tests\n")


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalSlurm:
    """Start with `start()`, stop with `stop()`; `env` is what a SLURM command needs (SLURM_CONF)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._daemons: list[subprocess.Popen] = []

    # --- configuration
    def _write_config(self) -> None:
        f = self.folder
        for sub in ("state", "log", *(f"spool/{n}" for n in NODES)):
            (f / sub).mkdir(parents=True, exist_ok=True)
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        nodes = "\n".join(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                          f"CPUs={CPUS_PER_NODE} State=UNKNOWN" for name, port in zip(NODES, node_ports))
        self.conf.write_text(f"""\
ClusterName=voctest{os.getpid()}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start cred_expire + 1 s after its requeue (default 121 s per requeue).
AuthInfo=socket={f / 'munge.sock'},cred_expire=5
CredType=cred/munge
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}/%n
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd-%n.pid'}
SlurmctldLogFile={f / 'log' / 'slurmctld.log'}
SlurmdLogFile={f / 'log' / 'slurmd-%n.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Distinct job ids per cluster: the batch script derives its rendezvous port from the id.
FirstJobId={random.randint(1000, 9_000_000)}
MinJobAge=3600
# SIGKILL this long after SIGTERM (srun --kill-on-bad-exit, scancel; default 30 s)
KillWait=3
# Start a requeued job soon after its begin time (cred_expire + 1 s), not at the next minute.
SchedulerParameters=sched_interval=1
{nodes}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime={GRACE_S}
PartitionName={URGENT} Nodes={','.join(NODES)} MaxTime=INFINITE State=UP PriorityTier=2
""")

    # --- life cycle
    def start(self) -> None:
        self._write_config()
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        f = self.folder
        self._spawn([_find("munged"), "--foreground", "--force", f"--socket={f / 'munge.sock'}",
                     f"--key-file={key}", f"--pid-file={f / 'munged.pid'}", f"--log-file={f / 'log' / 'munged.log'}",
                     f"--seed-file={f / 'munged.seed'}"], "munged")
        self._wait(lambda: (f / "munge.sock").exists(), "munged's socket")
        self._spawn([_find("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._wait(lambda: self.scontrol("ping", check=False).returncode == 0, "slurmctld")
        for name in NODES:
            self._spawn([_find("slurmd"), "-D", "-f", str(self.conf), "-N", name], f"slurmd-{name}")
        self._wait(lambda: self.node_states() == ["idle"] * len(NODES), "both nodes idle")

    def cancel_all(self, limit: float = 60) -> None:
        """SIGKILL every job's processes and cancel every job (pending ones too), then wait until the
        queue is empty and both nodes are idle again: a test that failed never leaves the next one
        without nodes. Raises TimeoutError naming what still holds the cluster after `limit` s."""
        subprocess.run([_find("scancel"), "--full", "--signal=KILL", "--state=RUNNING", "--user=root"],
                       env=self.env, capture_output=True, timeout=30)
        subprocess.run([_find("scancel"), "--user=root"], env=self.env, capture_output=True, timeout=30)
        self._wait(lambda: not self.squeue() and self.node_states() == ["idle"] * len(NODES),
                   "an empty queue and idle nodes after cancelling every job", limit=limit)

    def stop(self) -> None:
        """Cancel what still runs, then stop the daemons (slurmd last-in first-out)."""
        if self.scontrol("ping", check=False).returncode == 0:
            try:
                self.cancel_all(limit=30)
            except (TimeoutError, RuntimeError):
                pass
        for proc in reversed(self._daemons):
            proc.terminate()
        for proc in reversed(self._daemons):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.folder / "log" / f"{name}.out", "w")
        self._daemons.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                              start_new_session=True))

    def _wait(self, condition, what: str, limit: float = START_LIMIT_S) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            for proc in self._daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} waiting for {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {limit} s:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.folder / "log").iterdir()))

    # --- commands
    def scontrol(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([_find("scontrol"), *args], env=self.env, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:  # what scontrol said, not just its status
            raise RuntimeError(f"scontrol {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def scancel(self, *args: str) -> None:
        subprocess.run([_find("scancel"), *args], env=self.env, capture_output=True, timeout=30, check=True)

    def node_states(self) -> list[str]:
        """State of each node, in NODES order (a node in several partitions is listed once)."""
        done = subprocess.run([_find("sinfo"), "-h", "-N", "-o", "%N %T"], env=self.env, capture_output=True,
                              text=True, timeout=30)
        states = dict(line.split() for line in done.stdout.splitlines()) if done.returncode == 0 else {}
        return [states.get(name, "unknown") for name in NODES]

    def squeue(self) -> list[str]:
        done = subprocess.run([_find("squeue"), "-h", "-o", "%i"], env=self.env,
                              capture_output=True, text=True, timeout=30)
        return done.stdout.split()

    def sbatch(self, args: list[str], cwd: Path, env: dict | None = None) -> str:
        """Submit; returns the job id."""
        done = subprocess.run([_find("sbatch"), "--parsable", *args], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"sbatch {' '.join(args)}: {done.stderr}"
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, NodeList, ...)."""
        out = self.scontrol("show", "job", "--oneliner", job_id).stdout
        return dict(part.split("=", 1) for part in out.split() if "=" in part)

    def wait_job(self, job_id: str, states: tuple[str, ...], limit: float, log: Path | None = None) -> dict[str, str]:
        """Wait until the job is in one of `states` (e.g. COMPLETED, FAILED); returns its record."""
        deadline = time.monotonic() + limit
        while (info := self.job(job_id))["JobState"] not in states:
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-6000:] if log and log.exists() else ""
                raise AssertionError(f"job {job_id} still {info['JobState']} after {limit} s "
                                     f"(waiting for {states}):\n{tail}")
            time.sleep(0.5)  # each look is an RPC to slurmctld (scontrol): not more often than this
        return info
