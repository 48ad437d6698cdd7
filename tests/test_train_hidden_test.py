"""A training run whose test split has hidden labels and lost an image at pack time: the course's Kaggle case.

One real one-process run on real shards: shards.synth writes the test split without annotations,
one test JPEG is broken so `shards.pack --skip-bad` drops it, and the trainer must hand in every
packed test id once, report no test metric (saying why) and name the dropped id.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shards.classes import VOC_CLASSES
from shards.manifest import load_manifest
from shards.pack import main as pack_main
from shards.synth import generate
from train_helpers import ROOT, TINY, env, run, single

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hidden_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    """(run dir, shards dir, the dropped test id, the run's log)."""
    root = tmp_path_factory.mktemp("hidden-run")
    voc = generate(root / "VOCdevkit", {"train": 16, "val": 8, "test": 9}, seed=5, backgrounds_dir=None,
                   hidden={"test"})
    dropped = sorted((voc / "ImageSets" / "Main" / "test.txt").read_text().split())[3]
    (voc / "JPEGImages" / f"{dropped}.jpg").write_bytes(b"not a jpeg")
    shards = root / "shards"
    assert pack_main(["--voc", str(voc), "--out", str(shards), "--samples-per-shard", "4", "--skip-bad"]) == 0
    out = root / "run"
    log = run(single(["--shards", str(shards), "--out", str(out), "--epochs", "1", *TINY]))
    return out, shards, dropped, log


def test_submission_has_every_packed_test_id_once_and_no_metric(hidden_run):
    out, shards, dropped, log = hidden_run
    packed = load_manifest(shards)["splits"]["test"]["ids"]
    with open(out / "submission.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", *VOC_CLASSES] and [r[0] for r in rows[1:]] == sorted(packed) and len(packed) == 8
    assert dropped not in packed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_labeled"] is False and summary["submission_rows"] == 8
    assert summary["test_map"] is None and summary["test_map_voc07"] is None and summary["per_class_ap"] is None
    assert summary["final_model"]["test_map"] is None and "labels hidden" in summary["metric"]
    assert not (out / "per_class_ap.csv").exists(), "a per-class AP file without labels would be all blanks"
    assert "test labels hidden (manifest): submission.csv holds scores for 8 images; no test metric" in log


def test_test_images_dropped_at_pack_time_are_named(hidden_run):
    out, _, dropped, log = hidden_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_skipped_at_pack"] == {"count": 1, "ids": [dropped]}
    assert f"submission.csv has 1 fewer rows than the test list: ids {dropped} were skipped at pack time" in log


def test_scoring_against_hidden_labels_is_refused(hidden_run, tmp_path):
    out, shards, _, _ = hidden_run
    done = subprocess.run([sys.executable, "-m", "trainer.score", str(out / "submission.csv"), "--shards", str(shards)],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "packed without annotations (labels hidden)" in done.stderr
