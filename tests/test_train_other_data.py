"""Data sets beyond VOC, end to end: a made-up COCO 2014 set and a labels CSV of classes this project
has never seen each pack, train with 2 processes, and write a submission whose header is their class
names; trainer.score and trainer.predict follow the run's class list, and another list is refused."""

import csv
import tarfile
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from cli_in_process import run_module
from train_helpers import ROOT, TINY, ddp, env, run

pytestmark = pytest.mark.slow


def _make(kind: str, folder, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "shards.synth", "--format", kind, "--out", str(folder), "--max-side", "96",
                    *args], cwd=ROOT, env=env(), check=True, capture_output=True, timeout=300)


def _pack(out, *source: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "shards.pack", *source, "--out", str(out)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


def _train(shards, out) -> str:
    return run(ddp(["--shards", str(shards), "--out", str(out), "--epochs", "1", *TINY]))


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    _make("coco", root / "COCO", "--train", "64", "--val", "24")
    manifest = _pack(root / "shards", "--coco", str(root / "COCO"))
    return root / "shards", manifest, root / "run", _train(root / "shards", root / "run")


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    _make("csv", root / "photos", "--rows", "80", "--csv-form", "onehot", "--with-split")
    manifest = _pack(root / "shards", "--labels", str(root / "photos" / "labels.csv"),
                     "--images", str(root / "photos" / "images"))
    return root / "shards", manifest, root / "run", _train(root / "shards", root / "run"), root / "photos"


def _submission(run_dir) -> tuple[list[str], list[str], np.ndarray]:
    with open(run_dir / "submission.csv") as fh:
        header, *rows = list(csv.reader(fh))
    return header, [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


@pytest.mark.parametrize("which", ["coco_run", "csv_run"])
def test_a_submission_has_the_data_sets_classes_and_scores_to_sklearns_ap(which, request, capsys, tmp_path):
    shards, manifest, out, log, *_ = request.getfixturevalue(which)
    names = manifest["classes"]
    assert manifest["background_logit"] is False and "__background__" not in names
    header, ids, scores = _submission(out)
    assert header == ["id", *names], log[-2000:]
    assert ids == manifest["splits"]["test"]["ids"]  # every test image once, sorted
    config = (out / "config.yaml").read_text()
    assert "background_logit: false" in config and names[0] in config  # the run records its list

    code, printed, err = run_module("trainer.score", [out / "submission.csv", "--shards", shards,
                                                      "--json", tmp_path / "scored.json"], capsys)
    assert code == 0, err
    scored, summary = json.loads((tmp_path / "scored.json").read_text()), json.loads((out / "summary.json").read_text())
    assert scored["map"] == pytest.approx(summary["test_map"], abs=1e-6) and f"map {summary['test_map']:.6f}" in printed
    labels = {}
    for name in manifest["splits"]["test"]["shards"]:
        with tarfile.open(shards / name) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    record = json.loads(tar.extractfile(member).read())
                    labels[record["id"]] = record["labels"]
    positives = np.array([labels[i] for i in ids]) == 1
    for c, name in enumerate(names):
        if positives[:, c].any():
            assert scored["ap"][name] == pytest.approx(average_precision_score(positives[:, c], scores[:, c]),
                                                       abs=1e-6), name
        else:
            assert scored["ap"][name] is None


def test_predict_names_the_runs_classes(csv_run, capsys, tmp_path):
    _, manifest, out, _, photos = csv_run
    image = photos / "images" / f"{manifest['splits']['test']['ids'][0]}.jpg"
    code, printed, err = run_module("trainer.predict", [image, "--run", out, "--top", "3", "--cpu",
                                                        "--out", tmp_path / "p.csv"], capsys)
    assert code == 0, err
    assert sum(name in printed for name in manifest["classes"]) == 3
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == ",".join(["id", *manifest["classes"]])


def test_another_class_list_is_refused_in_one_line(coco_run, csv_run, shards_dir, capsys):
    coco_shards, _, coco_out, _ = coco_run
    csv_shards, csv_manifest, csv_out, _, _ = csv_run
    # A run resumed on shards of another data set.
    done = subprocess.run(ddp(["--shards", str(coco_shards), "--out", str(csv_out), "--resume", "--epochs", "2",
                               *TINY], ours=True), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"--resume: the run in {csv_out} is for classes [{csv_manifest['classes'][0]}" in done.stderr
    assert "class 0 is" in done.stderr
    # Its weights scored on VOC's shards.
    code, _, err = run_module("trainer.evaluate_run", ["--run", csv_out, "--shards", shards_dir, "--cpu"], capsys)
    assert code == 2 and "logit 0 is __background__" in err and len(err.strip().splitlines()) == 1
    # Its submission scored against COCO's labels: the header names the first wrong column.
    code, _, err = run_module("trainer.score", [csv_out / "submission.csv", "--shards", coco_shards], capsys)
    assert code == 2 and "header column 2 is" in err and len(err.strip().splitlines()) == 1
