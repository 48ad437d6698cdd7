"""A suite's wall time and each run's start: `python -m trainer.suite ARGS` timed, then its runs read back.

    python benchmarks/suite_times.py --json-out FILE -- SUITE --shards DIR --runs RUNS [SUITE FLAGS...]

Writes {"wall_seconds", "exit_status", "runs": [{"name", "finished", "start_seconds" (the
trainer's `start:` line: process start to the end of the first step), "start_phases", "loader"
(its `loader:` line), "wall_seconds" and "test_map" (summary.json), "why" (for a run that did not
finish: the suite's last word on it)}]}. Exit status 0 when every run finished except those the
suite could not start for want of pretrained weights (nothing downloads here), else 1
("unfinished": the runs the suite said refused, bad settings, failed, stopped or not started).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

START = re.compile(r"start: ([\d.]+) s from process start to the end of the first step \((.*)\)")
PHASE = re.compile(r"([a-zA-Z ]+) ([\d.]+) s")
UNFINISHED = re.compile(r"^(\S+): (refused|bad settings|failed|stopped|not started)\b", re.MULTILINE)


def run_record(run_dir: Path) -> dict:
    log = run_dir / "suite.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    record: dict = {"name": run_dir.name, "finished": (run_dir / "summary.json").is_file(), "start_seconds": [],
                    "start_phases": [], "loader": None, "wall_seconds": None, "test_map": None, "why": None}
    for match in START.finditer(text):  # one per start of the run (a resumed run has several)
        record["start_seconds"].append(float(match.group(1)))
        record["start_phases"].append({name.strip(): float(s) for name, s in PHASE.findall(match.group(2))})
    loaders = [line for line in text.splitlines() if line.startswith("loader: ")]
    record["loader"] = loaders[-1] if loaders else None
    if record["finished"]:
        summary = json.loads((run_dir / "summary.json").read_text())
        record["wall_seconds"], record["test_map"] = summary.get("wall_seconds"), summary.get("test_map")
    else:
        ended = [line for line in text.splitlines() if "ended:" in line]
        record["why"] = ended[-1] if ended else "not started"
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="benchmarks/suite_times.py", description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv[:cut])
    suite_args = argv[cut + 1:]
    if "--runs" not in suite_args:
        parser.error("the suite's arguments after -- must include --runs RUNS")
    runs = Path(suite_args[suite_args.index("--runs") + 1])
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer.suite", *suite_args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall, code = time.perf_counter() - start, done.returncode
    print(done.stdout, end="")
    # The suite's board lines "RUN: STATE ...": a run it could not start for want of pretrained weights
    # is expected here (nothing downloads); any other run that did not finish is a failure.
    unfinished = sorted(set(UNFINISHED.findall(done.stdout)))
    records = [run_record(d) for d in sorted(runs.iterdir()) if d.is_dir() and not d.name.startswith(".")] \
        if runs.is_dir() else []
    result = {"wall_seconds": round(wall, 1), "exit_status": code, "suite_args": suite_args, "runs": records}
    print(json.dumps({"wall_seconds": result["wall_seconds"], "exit_status": code,
                      "start_seconds": {r["name"]: r["start_seconds"] for r in records}}))
    result["unfinished"] = unfinished
    args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    finished = sum(r["finished"] for r in records)
    return 0 if finished and not unfinished and all(r["finished"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
