"""benchmarks/gpu_check.sh: the prepared script for a lent GPU machine, run here with --smoke on CPU.

What a GPU session relies on: it runs from the checkout without installing anything, every stage
leaves a record, a failed stage does not stop the rest, and OUT_DIR holds at most 8 flat JSON
files with names the device tool brings back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def run_check(out: Path, *args: str, work: Path | None = None) -> subprocess.CompletedProcess:
    # PYTHONPATH cleared: the script puts the checkout on it itself, as it must on a bare GPU machine.
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ""}
    if work is not None:
        env["WORK_DIR"] = str(work)
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=1200)


def stages(summary: dict) -> dict[str, dict]:
    return {stage["name"]: stage for stage in summary["stages"]}


@pytest.mark.slow
def test_smoke_run_writes_every_result_as_json(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    done = run_check(out, "--smoke", work=work)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "profile.json", "suite.json", "summary.json", "throughput-alexnet-eager.json",
                     "throughput-resnet18-eager.json", "train-alexnet.json"]
    assert len(files) <= 8 and all(SAFE_NAME.fullmatch(name) and (out / name).is_file() for name in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["mode"] == "smoke" and summary["failed"] == []
    by_name = stages(summary)
    assert list(by_name) == ["synth", "pack", "bench", "throughput-alexnet-eager", "throughput-alexnet-compiled",
                             "train-alexnet", "profile", "suite", "throughput-resnet18-eager",
                             "throughput-resnet18-compiled"]
    assert by_name["throughput-alexnet-compiled"]["status"] == "skipped"  # by design in --smoke
    assert all(s["status"] == "ok" and s["exit_status"] == 0 for n, s in by_name.items() if "compiled" not in n)
    assert by_name["bench"]["log_tail"]  # what each stage printed comes back in the summary

    bench = json.loads((out / "bench.json").read_text())
    assert bench["device_images_per_s"] > 0 and bench["device_ratio"] > 0 and bench["device_load_seconds"] > 0
    for model in ("alexnet", "resnet18"):
        records = json.loads((out / f"throughput-{model}-eager.json").read_text())["records"]
        assert [r["loader"] for r in records] == ["stream", "device"]
        assert all(r["model"] == model and r["end_to_end_images_per_s"] > 0 and r["ratio"] > 0 for r in records)
        assert records[1]["device_load_seconds"] >= 0 and records[0]["device_load_seconds"] is None
    # The first device-loader stage decodes the splits into the decoded cache; the later ones map them.
    lines = [json.loads((out / f"throughput-{m}-eager.json").read_text())["records"][1]["loader_line"]
             for m in ("alexnet", "resnet18")]
    assert "cached in" in lines[0] and "from the decoded cache" in lines[1], lines
    train = json.loads((out / "train-alexnet.json").read_text())
    assert train["exit_status"] == 0 and train["summary"]["model"] == "alexnet" and len(train["history"]) == 2
    assert "--loader" in train["trainer_args"] and train["summary"]["test_map"] is not None
    head = summary["headline"]
    assert len(head["throughput"]) == 4 and head["train_alexnet"]["test_map"] == train["summary"]["test_map"]
    # The profile: both loaders' steps timed; on CPU no syncs to count (null) and CPU ops only.
    profile = json.loads((out / "profile.json").read_text())
    assert [r["loader"] for r in profile["loaders"]] == ["device", "stream"]
    assert all(r["ms_per_step"] > 0 and r["host_syncs_per_step"] is None for r in profile["loaders"])
    assert profile["loaders"][0]["top_cpu_ops"] and head["profile"][0]["loader"] == "device"
    # The suite: both runs finished side by side, each with its start: line read back.
    suite = json.loads((out / "suite.json").read_text())
    assert suite["exit_status"] == 0 and [r["name"] for r in suite["runs"]] == ["alexnet", "vocnet"]
    assert all(r["finished"] and len(r["start_seconds"]) == 1 and r["start_seconds"][0] > 0 for r in suite["runs"])
    assert set(suite["runs"][0]["start_phases"][0]) == {"interpreter and imports", "Accelerator", "model", "data",
                                                        "prepare and resume", "first step"}
    assert head["suite"]["wall_seconds"] == suite["wall_seconds"]

    # A second call on the same WORK_DIR (a warm lent machine) reuses the packed set and runs only --only.
    again = run_check(tmp_path / "again", "--smoke", "--only", "bench", work=work)
    assert again.returncode == 0, again.stdout + again.stderr
    by_name = stages(json.loads((tmp_path / "again" / "summary.json").read_text()))
    assert by_name["synth"]["status"] == by_name["pack"]["status"] == "skipped"
    assert "reused" in by_name["pack"]["command"] and by_name["bench"]["status"] == "ok"
    assert all(by_name[n]["command"] == "not in --only" for n in by_name
               if n.startswith(("throughput", "train")) and "compiled" not in n)


def test_a_failed_stage_is_recorded_and_the_rest_carry_on(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    (work / "data" / "shards").mkdir(parents=True)
    (work / "data" / "shards" / "not-a-shard.txt").write_text("pack refuses a folder that is not empty\n")
    done = run_check(out, "--smoke", work=work)
    assert done.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    by_name = stages(summary)
    assert by_name["synth"]["status"] == "ok"
    assert by_name["pack"]["status"] == "failed" and by_name["pack"]["exit_status"] != 0
    assert any("error" in line for line in by_name["pack"]["log_tail"])
    later = [name for name in by_name if name not in ("synth", "pack")]
    assert len(later) == 8 and all(by_name[n]["status"] in ("not_run", "skipped") for n in later)
    assert summary["ok"] is False and "pack" in summary["failed"] and "bench" in summary["failed"]


def test_out_of_time_stages_are_not_run_and_say_so(tmp_path: Path) -> None:
    done = run_check(tmp_path / "out", "--smoke", "--deadline", "20")
    assert done.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {s["status"] for s in summary["stages"]} == {"not_run", "skipped"}
    assert stages(summary)["synth"]["command"].startswith("out of time")


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert run_check(tmp_path / "out", "--fast").returncode == 2


def load_check_summary():
    spec = importlib.util.spec_from_file_location("check_summary", REPO / "benchmarks" / "check_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_multi_line_stage_command_does_not_break_the_summary(tmp_path):
    """The H200 run's install stage was a multi-line `python -c`: the script now writes it on one line
    (newlines as a literal \\n), and the summary also reads a stages.tsv written before that."""
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "logs").mkdir(parents=True)
    out.mkdir()
    command = "python3 -c import sys, zipfile\nfor wheel in sys.argv[2:]:\n    zipfile.ZipFile(wheel)"
    script = SCRIPT.read_text()
    record = script[script.index("record() {"):script.index("\n}\n", script.index("record() {")) + 3]
    subprocess.run(["bash", "-c", f'{record}\nrecord install-webdataset ok 0 3 60 "$1"\nrecord bench ok 0 9 90 "b c"',
                    "bash", command], env={**os.environ, "WORK": str(work)}, check=True)
    assert len((work / "stages.tsv").read_text().splitlines()) == 2
    (work / "logs" / "bench.log").write_text('{"device_images_per_s": 5}\n')
    old_style = tmp_path / "old"
    (old_style / "logs").mkdir(parents=True)
    (old_style / "stages.tsv").write_text(f"install-webdataset\tok\t0\t3\t60\t{command}\nbench\tok\t0\t9\t90\tb c\n")
    for folder in (work, old_style):
        assert load_check_summary().main(["--out", str(out), "--work", str(folder), "--mode", "smoke",
                                          "--seconds", "12", "--deadline", "450"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert [(s["name"], s["seconds"]) for s in summary["stages"]] == [("install-webdataset", 3), ("bench", 9)]
        assert summary["stages"][0]["command"].replace("\\n", "\n") == command
