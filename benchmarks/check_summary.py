"""summary.json of a benchmarks/gpu_check.sh run: every stage's outcome, the headline numbers, the machine.

    python benchmarks/check_summary.py --out OUT_DIR --work WORK_DIR --mode full|smoke --seconds S --deadline S

Reads WORK/stages.tsv (one line per stage: name, status, exit status, seconds, limit, command)
and WORK/logs/NAME.log; writes OUT/bench.json (shards.bench's JSON line) and OUT/summary.json.
A stage's log stays on the machine; its last lines go into summary.json, since OUT_DIR is all
that comes back. Exit status 0 when every stage is ok or skipped by design, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

LOG_TAIL_LINES = 25
LOG_LINE_CHARS = 300
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_tail(path: Path) -> list[str]:
    """The last lines of a log, without terminal escapes or carriage-return redraws."""
    if not path.is_file():
        return []
    lines = [ANSI.sub("", line.rsplit("\r", 1)[-1]).rstrip() for line in path.read_text(errors="replace").splitlines()]
    return [line[:LOG_LINE_CHARS] for line in lines if line.strip()][-LOG_TAIL_LINES:]


def read_stages(work: Path) -> list[dict]:
    """WORK/stages.tsv's records. The script writes a command's newlines as a literal \\n; a
    stages.tsv from before that (a multi-line `python -c` command) has continuation lines, which
    belong to the command of the record before them."""
    records: list[list[str]] = []
    for line in (work / "stages.tsv").read_text().splitlines():
        fields = line.split("\t", 5)
        if len(fields) == 6 and fields[3].isdigit() and fields[4].isdigit():
            records.append(fields)
        elif records:
            records[-1][5] += "\n" + line
    stages = []
    for name, status, rc, seconds, limit, command in records:
        stages.append({"name": name, "status": status, "exit_status": int(rc) if rc else None,
                       "seconds": int(seconds), "limit_s": int(limit), "command": command,
                       "log_tail": log_tail(work / "logs" / f"{name}.log")})
    return stages


def last_json_line(path: Path) -> dict | None:
    """The last line of a log that is a JSON object (shards.bench prints its result last)."""
    for line in reversed(log_tail(path)):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def headline(out: Path) -> dict:
    """The numbers a reader wants first, from the result files that exist."""
    numbers: dict = {"bench": load(out / "bench.json"), "throughput": [], "train_alexnet": None}
    for path in sorted(out.glob("throughput-*.json")):
        for r in (load(path) or {}).get("records", []):
            numbers["throughput"].append({key: r[key] for key in (
                "model", "loader", "compile", "batch_size", "image_size", "mixed_precision", "channels_last",
                "model_only_images_per_s", "end_to_end_images_per_s", "ratio", "device_load_seconds",
                "peak_gpu_memory_mb")})
    train = load(out / "train-alexnet.json")
    if train:
        summary = train.get("summary") or {}
        numbers["train_alexnet"] = {
            "exit_status": train["exit_status"], "seconds_in_trainer": train["seconds_in_trainer"],
            "peak_gpu_memory_mb": train["peak_gpu_memory_mb"], "peak_gpu_reserved_mb": train["peak_gpu_reserved_mb"],
            **{key: summary.get(key) for key in ("test_map", "best_val_map", "wall_seconds", "images_per_s")},
            "epoch_seconds": [round(float(row["seconds"]), 2) for row in train.get("history", []) if row.get("seconds")],
        }
    profile = load(out / "profile.json")
    if profile:
        numbers["profile"] = [{key: r.get(key) for key in ("loader", "ms_per_step", "host_syncs_per_step", "sync_sites")}
                              | {"top_cuda_kernels": r.get("top_cuda_kernels", [])[:5]} for r in profile["loaders"]]
    suite = load(out / "suite.json")
    if suite:
        numbers["suite"] = {"wall_seconds": suite["wall_seconds"], "exit_status": suite["exit_status"],
                            "runs": {r["name"]: {"start_seconds": r["start_seconds"], "wall_seconds": r["wall_seconds"],
                                                 "finished": r["finished"]} for r in suite["runs"]}}
    return numbers


def machine() -> dict:
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--mode", choices=("full", "smoke"), required=True)
    parser.add_argument("--seconds", type=int, required=True, help="the script's run time so far")
    parser.add_argument("--deadline", type=int, required=True)
    args = parser.parse_args(argv)
    stages = read_stages(args.work)
    bench = last_json_line(args.work / "logs" / "bench.log")
    if bench is not None:
        (args.out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    ok = all(stage["status"] in ("ok", "skipped") for stage in stages)
    summary = {"ok": ok, "mode": args.mode, "seconds": args.seconds, "deadline_s": args.deadline,
               "failed": [s["name"] for s in stages if s["status"] not in ("ok", "skipped")],
               "headline": headline(args.out), "stages": stages, "machine": machine(),
               "files": sorted(p.name for p in args.out.iterdir() if p.is_file()) + ["summary.json"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"ok": ok, "failed": summary["failed"], "seconds": args.seconds}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
