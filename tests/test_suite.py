"""trainer.suite and trainer.report for real: a suite of tiny recipes (a test suites file) trained as
subprocesses on the fixture shards; a run killed after its first checkpoint, then stopped by a SIGTERM
to the suite, resumes; a run without its pretrained weights is reported while the others go on; a
second call redoes nothing; REPORT.md's numbers are summary.json's.

A trainer is paused where the test acts (tests/suite_pause/sitecustomize.py): no sleeps, no races.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from trainer.main import STOP_CHECK_UPDATES
from train_helpers import ROOT, descendants, env, history, wait_until

TINY = {"model": "vocnet", "image_size": 48, "batch_size": 4, "optimizer": "adam", "lr": 0.003, "augment": "none",
        "test_frequency": 1, "seed": 3}
# --image-size changes every tiny recipe (48 -> 32: faster), so it needs --allow-recipe-change.
FLAGS = ["--workers", "0", "--image-size", "32", "--allow-recipe-change"]


def write_suites(folder: Path) -> Path:
    recipes = {"simple": {**TINY, "epochs": 1}, "resumed": {**TINY, "epochs": 2},
               "pretrained": {**TINY, "model": "resnet18_pretrained", "epochs": 1}}
    for name, recipe in recipes.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    # `simple` is named like a report run (Part 1A) but is a tiny recipe: the report must say so.
    suites = {"tiny": {"about": "tests", "runs": {"pretrained": "pretrained.yaml", "resumed": "resumed.yaml",
                                                  "simple": "simple.yaml"}},
              "tiny_ok": {"runs": {"resumed": "resumed.yaml", "simple": "simple.yaml"}}}
    path = folder / "suites.yaml"
    path.write_text(yaml.safe_dump(suites, sort_keys=False))
    return path


def suite_args(suite: str, suites: Path, shards: Path, runs: Path) -> list[str]:
    return [suite, "--suites", str(suites), "--shards", str(shards), "--runs", str(runs), *FLAGS]


def call_suite(args: list[str]) -> tuple[int, str]:
    """trainer.suite.main in this process (its trainers are still subprocesses); (exit status, output)."""
    from trainer.suite.cli import main
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main(args)
    return code, output.getvalue()


@pytest.fixture(scope="module")
def suite_runs(shards_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Three calls of the suite over the same --runs; returns their exit statuses and outputs."""
    tmp = tmp_path_factory.mktemp("suite")
    suites, runs, torch_home = write_suites(tmp), tmp / "runs", tmp / "torch-home"
    done = SimpleNamespace(runs=runs, suites=suites, torch_home=torch_home)
    os.environ["TORCH_HOME"] = str(torch_home)  # empty: resnet18_pretrained's weights are missing
    try:
        # 1. A subprocess, as users start it. `resumed` is paused before epoch 2 (after its epoch-1 checkpoint)
        #    and its trainer SIGKILLed: the suite reports it and goes on to `simple`, paused before its first
        #    batch; a SIGTERM to the suite (a scheduler's preemption) reaches that trainer, which saves a
        #    mid-epoch checkpoint and exits 0.
        killed, stopped = tmp / "resumed.paused", tmp / "simple.paused"
        pause = {str(runs / "resumed"): [2, str(killed)], str(runs / "simple"): [1, str(stopped)]}
        log = tmp / "call1.log"
        proc = subprocess.Popen([sys.executable, "-m", "trainer.suite", *suite_args("tiny", suites, shards_dir, runs)],
                                cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                env={**env(), "PYTHONPATH": str(ROOT / "tests" / "suite_pause"),
                                     "VOC_PAUSE": json.dumps(pause)})
        wait_until(killed.exists, proc, log, timeout=300)
        done.checkpoints_at_kill = sorted(p.name for p in (runs / "resumed" / "checkpoints").iterdir())
        for pid in descendants(proc.pid):  # the trainer (and any loader worker), not the suite
            os.kill(pid, signal.SIGKILL)
        wait_until(stopped.exists, proc, log, timeout=300)
        proc.send_signal(signal.SIGTERM)
        done.rc1, done.out1 = proc.wait(timeout=300), log.read_text()
        done.checkpoints_at_stop = sorted(p.name for p in (runs / "simple" / "checkpoints").iterdir())
        done.status1 = call_suite(["tiny", "--suites", str(suites), "--runs", str(runs), "--status"])
        # 2. Both resume and finish, two at once (in this process: faster; the trainers are subprocesses anyway).
        done.rc2, done.out2 = call_suite([*suite_args("tiny", suites, shards_dir, runs), "--parallel", "2"])
        done.status2 = call_suite(["tiny", "--suites", str(suites), "--runs", str(runs), "--status"])
        # 3. Every run of tiny_ok has finished: nothing is redone, not even with other epochs.
        done.mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()}
        done.rc3, done.out3 = call_suite([*suite_args("tiny_ok", suites, shards_dir, runs), "--epochs", "3"])
    finally:
        del os.environ["TORCH_HOME"]
    return done


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_suite_goes_on_past_failures_resumes_and_skips_finished_runs(suite_runs) -> None:
    s, runs = suite_runs, suite_runs.runs
    # 1: no weights -> said, nothing started; killed after the epoch-1 checkpoint -> failed, and the suite
    #    went on; the SIGTERM stopped `simple` with a checkpoint
    assert s.rc1 == 1, s.out1
    weights = f"{s.torch_home}/hub/checkpoints/resnet18-"
    assert "pretrained: no weights: --weights: resnet18_pretrained needs the ImageNet weights" in s.out1
    assert weights in s.out1 and not (runs / "pretrained").exists()
    assert s.checkpoints_at_kill == ["epoch_0001"]
    assert "resumed: failed: killed by SIGKILL" in s.out1
    assert "simple: SIGTERM: asked to stop" in s.out1 and "simple: stopped" in s.out1
    assert s.checkpoints_at_stop == [f"epoch_0001_step_{STOP_CHECK_UPDATES:05d}"]
    assert "0 of 3 runs finished; 1 no weights, 1 failed, 1 stopped (stopped by SIGTERM)" in s.out1
    # --status, from the directories alone: the same story
    code, status = s.status1
    assert code == 1 and "1 not started, 1 failed, 1 stopped" in status, status
    assert "killed by SIGKILL" in status.split("resumed", 1)[1].split("simple", 1)[0]
    # 2: both resumed where they were and finished; every epoch once in their history
    assert s.rc2 == 1 and "2 of 3 runs finished; 1 no weights" in s.out2, s.out2
    assert "resumed: resuming" in s.out2 and "simple: resuming" in s.out2
    code, status = s.status2
    assert code == 1 and "1 not started, 2 done" in status and "test mAP" in status, status
    resumed_log, simple_log = (runs / "resumed" / "suite.log").read_text(), (runs / "simple" / "suite.log").read_text()
    starts = [line for line in resumed_log.splitlines() if line.startswith("=== trainer.suite") and " ended: " not in line]
    assert len(starts) == 2 and "(epoch 1 done, 0 batches into the next)" in resumed_log
    assert " ended: failed: killed by SIGKILL" in resumed_log and " ended: done: test mAP" in resumed_log
    assert f"(epoch 0 done, {STOP_CHECK_UPDATES} batches into the next)" in simple_log
    for name, epochs in (("resumed", 2), ("simple", 1)):
        assert [int(row["epoch"]) for row in history(runs / name)] == list(range(1, epochs + 1))
        result = summary(runs / name)
        assert result["epochs"] == epochs and 0 <= result["test_map"] <= 1
        assert f"{name}: done: test mAP {result['test_map']:.4f}" in s.out2
        settings = yaml.safe_load((runs / name / "config.yaml").read_text())["settings"]
        assert (settings["workers"], settings["image_size"], settings["model"]) == (0, 32, "vocnet")  # trailing flags
    # 3: nothing redone, exit 0 when every run of the suite has finished
    assert s.rc3 == 0, s.out3
    for name, epochs in (("resumed", 2), ("simple", 1)):
        assert (f"{name}: finished before: skipped; it was trained with epochs {epochs} (this call: 3): delete "
                f"{runs / name} to train it again") in s.out3
    assert "2 of 2 runs finished" in s.out3
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()} == s.mtimes


def _table_row(markdown: str, section: str, run: str) -> list[str]:
    """The cells of `run`'s row in the first table after the heading `section`."""
    part = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    for line in part.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == run:
            return cells
    raise AssertionError(f"no row {run} under {section}:\n{part}")


@pytest.mark.slow
def test_report_from_the_runs_equals_their_summaries(suite_runs, tmp_path) -> None:
    runs = suite_runs.runs
    out = tmp_path / "report" / "REPORT.md"
    from trainer.report.cli import main
    assert main([str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    simple, resumed = summary(runs / "simple"), summary(runs / "resumed")
    row = _table_row(text, "Part 1A", "simple")  # named like the report's run: beside the report's figure
    assert row[1:4] == ["0.1475", f"{simple['test_map']:.4f}", f"{simple['test_map_voc07']:.4f}"]
    assert row[4] == "final (epoch 1)" and row[6] == "1" and row[8] == "1" and row[9] == "cpu"
    assert "differs from" in row[10] and "image_size 48 -> 32" in row[10]
    assert "not the report's configs/report/simple.yaml" in row[10]
    alexnet = _table_row(text, "Part 1A", "alexnet")
    assert alexnet[1:3] == ["0.0928", "-"] and alexnet[10] == "missing: not run"
    assert "missing: not run" in _table_row(text, "Ablation and final network", "ablation_5_final")[10]
    row = _table_row(text, "Runs not in the report", "resumed")
    assert row[1:4] == ["-", f"{resumed['test_map']:.4f}", f"{resumed['test_map_voc07']:.4f}"] and row[6] == "2"
    for name in ("bicycle", "person"):
        cells = _table_row(text, "Per-class test AP", name)
        expected = [simple["per_class_ap"][name], resumed["per_class_ap"][name]]  # the tables' order
        assert cells[1:] == ["-" if v is None else f"{v:.4f}" for v in expected]
    assert _table_row(text, "Per-class test AP", "**mAP**")[1:] == [f"**{simple['test_map']:.4f}**",
                                                                     f"**{resumed['test_map']:.4f}**"]
    provenance = _table_row(text, "Provenance", "resumed")
    assert provenance[3].endswith("UTC") and "resumed last start: yes" in provenance[6]
    for picture in ("map", "ap", "simple-loss", "simple-map", "resumed-loss", "resumed-map"):
        path = out.parent / f"REPORT-{picture}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({path.name})" in text

    # The suite's own runs: a run of the suite that never started keeps its row, marked missing.
    mine = tmp_path / "mine.md"
    assert main([str(runs), "--out", str(mine), "--suite", "tiny", "--suites", str(suite_runs.suites)]) == 0
    assert "missing: not run" in _table_row(mine.read_text(), "Runs not in the report", "pretrained")[10]
    # Any runs side by side
    compared = tmp_path / "cmp.md"
    assert main([str(runs / "resumed"), str(runs / "simple"), "--out", str(compared)]) == 0
    assert _table_row(compared.read_text(), "Runs", "resumed")[2] == f"{resumed['test_map']:.4f}"
    assert _table_row(compared.read_text(), "Runs", "simple")[1] == "0.1475"
