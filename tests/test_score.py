"""python -m trainer.score: a run's submission.csv scores to the run's own mAP, from a VOC folder,
a VOC tar or the shards alike; every refusal is exit 2 and one 'error:' line naming the problem."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from shards.classes import VOC, VOC_CLASSES
from shards.labels import shard_split_labels, voc_split_labels
from shards.manifest import load_manifest
from trainer.evaluation.metrics import average_precisions
from trainer.rundir.outputs import write_submission
from trainer.tools.score import main

REPO = Path(__file__).resolve().parents[1]


def _score_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.score", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def voc_tar(voc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """voc_root as one tar with VOCdevkit/VOC2007/... inside, as the official archives hold it."""
    path = tmp_path_factory.mktemp("voctar") / "VOCtest_06-Nov-2007.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(voc_root, arcname="VOCdevkit")
    return path


@pytest.fixture(scope="module")
def split_labels(shards_dir: Path) -> tuple[list[str], np.ndarray]:
    """(ids, states) of the test split as the trainer sees them: webdataset over the shards, sorted by id."""
    urls = [str(shards_dir / name) for name in load_manifest(shards_dir)["splits"]["test"]["shards"]]
    records = [json.loads(s["json"]) for s in wds.WebDataset(urls, shardshuffle=False, nodesplitter=None,
                                                              empty_check=False)]
    records.sort(key=lambda r: r["id"])
    return [r["id"] for r in records], np.array([r["labels"] for r in records], dtype=np.int8)


@pytest.fixture(scope="module")
def submission(split_labels: tuple[list[str], np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A submission written by the trainer's own writer: sigmoid float32 scores, some tied."""
    ids, _ = split_labels
    path = tmp_path_factory.mktemp("sub") / "submission.csv"
    return write_submission(path, ids, _trainer_scores(len(ids)), VOC_CLASSES)


def _trainer_scores(n: int) -> np.ndarray:
    logits = np.random.default_rng(7).normal(size=(n, VOC.num_classes)).astype(np.float32)
    logits[5:9] = logits[4]  # ties across images in every class: rank order must match the trainer's
    return 1 / (1 + np.exp(-logits))


def _expected_json(states: np.ndarray, scores: np.ndarray) -> dict:
    m = average_precisions(states, scores, VOC_CLASSES)
    return {"map": m["map"], "map_voc07": m["map_voc07"], "ap": dict(zip(VOC_CLASSES, m["ap"])),
            "ap_voc07": dict(zip(VOC_CLASSES, m["ap_voc07"])), "positives": dict(zip(VOC_CLASSES, m["positives"])),
            "images": len(states), "thresholded": m["thresholded"], "top3": m["top3"],
            **{key: dict(zip(VOC_CLASSES, m["per_class"][key])) for key in ("precision", "recall", "f1")}}


def test_labels_are_the_same_from_folder_voc2007_tar_and_shards(voc_root, voc_tar, shards_dir, split_labels):
    ids, states = split_labels
    for got_ids, got_states in (voc_split_labels(voc_root), voc_split_labels(voc_root / "VOC2007"),
                                voc_split_labels(voc_tar), shard_split_labels(shards_dir)):
        assert got_ids == ids
        np.testing.assert_array_equal(got_states, states)
        assert got_states.dtype == np.int8


def test_trainer_submission_scores_to_the_trainer_map_from_every_source(
        submission, split_labels, shards_dir, voc_root, voc_tar, tmp_path):
    ids, states = split_labels
    # What trainer.evaluation.evaluate hands the metric: rows sorted by id, float32 sigmoid scores.
    expected = _expected_json(states, _trainer_scores(len(ids)))
    assert 0 < len([a for a in expected["ap"].values() if a is not None]) < VOC.num_classes  # missing classes too

    cli = _score_cli(submission, "--shards", shards_dir, "--json", tmp_path / "shards.json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "shards.json").read_text()) == expected  # exact, not approx
    assert f"map {expected['map']:.6f}" in cli.stdout and f"map_voc07 {expected['map_voc07']:.6f}" in cli.stdout
    assert f"CF1 {expected['thresholded']['CF1']:.4f}" in cli.stdout and \
        f"OF1 {expected['top3']['OF1']:.4f}" in cli.stdout

    for name, flag in (("folder", voc_root), ("voc2007", voc_root / "VOC2007"), ("tar", voc_tar)):
        assert main([str(submission), "--voc", str(flag), "--json", str(tmp_path / f"{name}.json")]) == 0
        assert json.loads((tmp_path / f"{name}.json").read_text()) == expected, name
    assert list(json.loads((tmp_path / "tar.json").read_text())["ap"]) == list(VOC_CLASSES)  # SPEC order


def test_any_finite_scores_in_any_row_order_with_bom_and_crlf(split_labels, shards_dir, tmp_path):
    # Raw logits (negative, above 1) are fine: only the ranking counts. Rows unsorted, and the
    # file as a spreadsheet saves it (byte-order mark, CRLF, a trailing blank line).
    ids, states = split_labels
    logits = np.random.default_rng(3).normal(scale=5, size=(len(ids), VOC.num_classes))
    path = tmp_path / "logits.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(["id", *VOC_CLASSES])
        writer.writerows([ids[i], *(repr(float(x)) for x in logits[i])] for i in reversed(range(len(ids))))
        fh.write("\r\n")
    assert main([str(path), "--shards", str(shards_dir), "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text()) == _expected_json(states, logits)


# A refusal case: (name, how to make the CSV from the good one's lines (None: no file), the label
# flags from (voc_root, shards_dir, tmp_path), fragments of the error line ({ids[k]}: the k-th test id)).
Edit = Callable[[list[str]], list[str]]
Flags = Callable[[Path, Path, Path], list[str]]


def _voc(voc_root: Path, shards_dir: Path, tmp_path: Path) -> list[str]:
    return ["--voc", str(voc_root)]


def _cell(lines: list[str], line: int, column: int, value: str) -> list[str]:
    cells = lines[line - 1].split(",")
    cells[column] = value
    return lines[:line - 1] + [",".join(cells)] + lines[line:]


def _same(lines: list[str]) -> list[str]:
    return lines


CLI_REFUSALS: list[tuple[str, Edit | None, Flags, list[str]]] = [
    ("missing", lambda ls: ls[:1] + ls[8:], _voc, ["7 of the 17 images of split 'test' have no row",
                                                   "first: {ids[0]}, {ids[1]}"]),
    ("duplicate", lambda ls: ls + [ls[3]], _voc, ["id {ids[2]} is on lines 4 and 19", "exactly one row"]),
    ("unknown", lambda ls: ls + ["999999" + ls[3][6:]], _voc, ["1 id(s) are not in split 'test'", "999999 (line 19)"]),
    ("order", lambda ls: [ls[0].replace("cat,chair", "chair,cat")] + ls[1:], _voc,
     ["header column 9 is 'chair', expected 'cat'", "reorder"]),
    ("lacks", lambda ls: [ls[0].removesuffix(",tvmonitor")] + ls[1:], _voc, ["header lacks 1 column(s): tvmonitor"]),
    ("nan", lambda ls: _cell(ls, 4, 20, "nan"), _voc, ["line 4 (id {ids[2]}), column tvmonitor: 'nan' is not a finite"]),
    ("nofile", None, _voc, ["nofile.csv: no such file"]),
    ("nosplit", _same, lambda v, s, t: ["--voc", str(v), "--split", "nosuch"],
     ["has no split 'nosuch'", "it has train, val, test"]),
    ("noflag", _same, lambda v, s, t: [], ["one of the arguments --voc --shards is required"]),
]

MORE_REFUSALS: list[tuple[str, Edit | None, Flags, list[str]]] = [
    ("zeros", lambda ls: ls[:1] + [line.lstrip("0") for line in ls[1:]], _voc, ["leading zeros"]),
    ("background", lambda ls: ["id,__background__" + ls[0][2:]] + [i.replace(",", ",0.5,", 1) for i in ls[1:]],
     _voc, ["column 2 is '__background__', expected 'aeroplane'", "drop the __background__ column"]),
    ("extra", lambda ls: [line + ",1" for line in ls], _voc, ["header has 1 column(s) after tvmonitor"]),
    ("word", lambda ls: _cell(ls, 3, 1, "high"), _voc, ["line 3 (id {ids[1]}), column aeroplane: 'high'"]),
    ("inf", lambda ls: _cell(ls, 5, 7, "-inf"), _voc, ["column car: '-inf' is not a finite"]),
    ("blank", lambda ls: _cell(ls, 2, 2, ""), _voc, ["line 2 (id {ids[0]}), column bicycle: '' is not a finite"]),
    ("short", lambda ls: ls[:4] + [ls[4].rsplit(",", 1)[0]] + ls[5:], _voc, ["line 5 has 20 cells, expected 21"]),
    ("noid", lambda ls: _cell(ls, 6, 0, ""), _voc, ["line 6 has an empty id"]),
    ("empty", lambda ls: [], _voc, ["the file is empty"]),
    ("notutf8", lambda ls: [ls[0], "\udcff" + ls[1]], _voc, ["cannot read it as a UTF-8 CSV file"]),
    ("val", _same, lambda v, s, t: ["--voc", str(v), "--split", "val"], ["17 id(s) are not in split 'val'", "--split"]),
    ("shardsplit", _same, lambda v, s, t: ["--shards", str(s), "--split", "trainval"],
     ["no split 'trainval' (packed: train, val, test)"]),
    ("notvoc", _same, lambda v, s, t: ["--voc", str(t)], ["not a VOC folder"]),
    ("notshards", _same, lambda v, s, t: ["--shards", str(v)], ["manifest.json not found", "shards.pack"]),
]


def _refusal(case: tuple, submission: Path, voc_root: Path, shards_dir: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(argv, expected fragments) of a refusal case, its CSV written under tmp_path."""
    name, edit, flags, expected = case
    lines = submission.read_text().splitlines()
    path = tmp_path / f"{name}.csv"
    if edit is not None:
        # surrogateescape turns the "\udcff" of the notutf8 case into the raw byte 0xff.
        path.write_bytes("".join(line + "\n" for line in edit(lines)).encode("utf-8", "surrogateescape"))
    ids = [line.split(",")[0] for line in lines[1:]]
    return [str(path), *flags(voc_root, shards_dir, tmp_path)], [f.format(ids=ids) for f in expected]


def _assert_one_error_line(stderr: str, expected: list[str]) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    for fragment in expected:
        assert fragment in stderr


@pytest.mark.parametrize("case", CLI_REFUSALS, ids=[c[0] for c in CLI_REFUSALS])
def test_cli_refuses_with_exit_2_and_one_line(case, submission, voc_root, shards_dir, tmp_path):
    args, expected = _refusal(case, submission, voc_root, shards_dir, tmp_path)
    cli = _score_cli(*args, "--json", tmp_path / "out.json")
    assert cli.returncode == 2
    _assert_one_error_line(cli.stderr, expected)
    assert cli.stdout == "" and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("case", MORE_REFUSALS, ids=[c[0] for c in MORE_REFUSALS])
def test_main_refuses_with_2_and_one_line(case, submission, voc_root, shards_dir, tmp_path, capsys):
    args, expected = _refusal(case, submission, voc_root, shards_dir, tmp_path)
    assert main([*args, "--json", str(tmp_path / "out.json")]) == 2
    out, err = capsys.readouterr()
    _assert_one_error_line(err, expected)
    assert out == "" and not (tmp_path / "out.json").exists()


def test_shards_that_disagree_with_their_manifest_are_refused(shards_dir, submission, tmp_path, capsys):
    broken = tmp_path / "shards"
    broken.mkdir()
    manifest = load_manifest(shards_dir)
    for name in manifest["splits"]["test"]["shards"][1:]:  # the first test shard is lost
        (broken / name).write_bytes((shards_dir / name).read_bytes())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main([str(submission), "--shards", str(broken)]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err, [manifest["splits"]["test"]["shards"][0], "repack"])


def test_help_says_what_it_refuses():
    cli = _score_cli("--help")
    assert cli.returncode == 0
    for fragment in ("--voc", "--shards", "--split", "--json", "VOCtest_06-Nov-2007.tar", "exit status 2",
                     "finite", "id,aeroplane,...,tvmonitor"):
        assert fragment in cli.stdout
