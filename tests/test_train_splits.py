"""The papers' protocols. "07+12" packed in one command, trained on trainval
(--train-splits train,val) without selection (--val-split none), tested with the final model.

One real one-process run (in this process: trainer.main.main, as `python trainer/main.py` runs it)
on real shards of two synthetic VOC years.
"""

from __future__ import annotations

import json

import pytest

from shards.manifest import load_manifest
from shards.pack import main as pack_main
from shards.synth import generate
from train_helpers import TINY, history

pytestmark = pytest.mark.slow


def test_07_plus_12_trainval_trains_on_both_years_and_tests_the_final_model(tmp_path, capsys):
    voc07 = generate(tmp_path / "VOCdevkit", {"train": 8, "val": 6, "test": 9}, seed=6, backgrounds_dir=None)
    voc12 = generate(tmp_path / "VOCdevkit", {"train": 7, "val": 3}, seed=7, backgrounds_dir=None, year=2012)
    shards, out = tmp_path / "shards", tmp_path / "run"
    assert pack_main(["--voc", str(voc07), "--voc", str(voc12), "--out", str(shards), "--samples-per-shard", "4"]) == 0
    from trainer.main import main
    capsys.readouterr()
    assert main(["--shards", str(shards), "--out", str(out), "--epochs", "2", *TINY,
                 "--train-splits", "train,val", "--val-split", "none"]) == 0
    log = capsys.readouterr().out
    splits = load_manifest(shards)["splits"]
    assert splits["train"]["years"] == splits["val"]["years"] == ["2007", "2012"] and splits["test"]["years"] == ["2007"]
    # 8 + 7 train and 6 + 3 val images, batch 4: 24 // 4 = 6 batches an epoch
    assert "6 batches of 4 per process per epoch" in log
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_splits"], summary["val_split"]) == ("train,val", "none")
    assert summary["submission_model"] == "final" and summary["submission_epoch"] == 2
    assert summary["best_val_map"] is None and summary["best_model"] is None and summary["test_map"] is not None
    assert not (out / "best").exists()
    rows = history(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["val_map"] == "" and r["val_loss"] == "" and r["train_map"] != "" for r in rows), rows
    # evaluate_run on a split the run trained on says the scores are not held out
    from cli_in_process import run_module
    code, stdout, err = run_module("trainer.evaluate_run", ["--run", out, "--weights", "final", "--split", "val",
                                                            "--cpu", "--out", tmp_path / "eval-val"], capsys)
    assert code == 0, err
    assert "note: the run trained on val (--train-splits train,val): these scores are not held out" in stdout
