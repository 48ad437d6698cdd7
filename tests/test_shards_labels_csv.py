"""shards.pack --labels CSV --images DIR: both CSV forms, splits, class order, ids, hidden labels, bad input;
made-up photos from shards.synth --format csv."""

from __future__ import annotations

import csv
import shutil
import zlib
from pathlib import Path

import pytest
from PIL import Image

from shards.manifest import load_manifest
from shards.pack import main
from shards.synth import DEFAULT_BACKGROUNDS
from shards.synth_csv import CLASSES, generate_csv, row_split
from test_shards_pack import _read_shards

ROWS = 60


def _make(root: Path, **kwargs) -> Path:
    return generate_csv(root, ROWS, seed=2, backgrounds_dir=DEFAULT_BACKGROUNDS, max_side=80, **kwargs)


def _pack(csv_path: Path, out: Path, *extra: str) -> int:
    return main(["--labels", str(csv_path), "--images", str(csv_path.parent / "images"), "--out", str(out),
                 "--samples-per-shard", "8", "--max-size", "48", *extra])


def _rows(csv_path: Path) -> list[list[str]]:
    return list(csv.reader(csv_path.read_text().splitlines()))


def _write_rows(csv_path: Path, rows: list[list[str]]) -> None:
    with csv_path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(labels.csv in tags form, its shards)."""
    root = tmp_path_factory.mktemp("tags")
    csv_path = _make(root / "set", form="tags")
    assert _pack(csv_path, root / "shards") == 0
    return csv_path, root / "shards"


def test_both_forms_give_the_same_shards(tags: tuple[Path, Path], tmp_path: Path) -> None:
    onehot = _make(tmp_path / "set", form="onehot")
    assert _rows(onehot)[0] == ["id", *CLASSES] and _rows(tags[0])[0] == ["id", "labels"]
    assert _pack(onehot, tmp_path / "shards") == 0
    assert _shard_bytes(tmp_path / "shards") == _shard_bytes(tags[1])
    manifest = load_manifest(tags[1])
    assert manifest["classes"] == sorted(CLASSES) and manifest["background_logit"] is False


def test_labels_are_the_rows_and_empty_rows_are_counted_negatives(tags: tuple[Path, Path]) -> None:
    csv_path, shards = tags
    expected = {row[0]: set(row[1].split()) for row in _rows(csv_path)[1:]}
    manifest = load_manifest(shards)
    for split, entry in manifest["splits"].items():
        samples = _read_shards(shards, split)
        for image_id, sample in samples.items():
            assert sample["json"]["labels"] == [1 if c in expected[image_id] else -1 for c in manifest["classes"]]
            assert sample["json"]["objects"] == [{"name": c} for c in manifest["classes"] if c in expected[image_id]]
        assert entry["all_negative"] == sum(1 for i in samples if not expected[i])
    assert sum(e["all_negative"] for e in manifest["splits"].values()) > 0


def test_without_a_split_column_val_and_test_are_held_out_by_id(tags: tuple[Path, Path]) -> None:
    ids = [row[0] for row in _rows(tags[0])[1:]]
    rule = {i: {0: "val", 1: "test"}.get(zlib.crc32(i.encode("utf-8")) % 10, "train") for i in ids}
    splits = load_manifest(tags[1])["splits"]
    assert {split: entry["ids"] for split, entry in splits.items()} == \
        {split: sorted(i for i in ids if rule[i] == split) for split in ("train", "val", "test")}


def test_a_split_column_decides_and_hidden_labels_pack_unlabeled(tmp_path: Path) -> None:
    csv_path = _make(tmp_path / "set", form="onehot", with_split=True, hide_test_labels=True)
    assert _pack(csv_path, tmp_path / "shards") == 0
    splits = load_manifest(tmp_path / "shards")["splits"]
    for split in ("train", "val", "test"):
        assert splits[split]["ids"] == sorted(f"img_{i:04d}" for i in range(ROWS) if row_split(i, ROWS) == split)
    assert splits["test"]["labeled"] is False and splits["test"]["positives"] is None
    assert splits["train"]["labeled"] is True
    assert all(s["json"]["labels"] is None for s in _read_shards(tmp_path / "shards", "test").values())


def test_classes_file_fixes_the_order(tags: tuple[Path, Path], tmp_path: Path) -> None:
    order = list(reversed(CLASSES)) + ["zebra crossing"]  # a class with no positives is allowed
    (tmp_path / "classes.txt").write_text("\n".join(order) + "\n")
    assert _pack(tags[0], tmp_path / "shards", "--classes", str(tmp_path / "classes.txt")) == 0
    manifest = load_manifest(tmp_path / "shards")
    assert manifest["classes"] == order and manifest["splits"]["train"]["positives"]["zebra crossing"] == 0
    default = _read_shards(tags[1], "train")
    for image_id, sample in _read_shards(tmp_path / "shards", "train").items():
        by_name = dict(zip(order, sample["json"]["labels"]))
        assert [by_name[c] for c in sorted(CLASSES)] == default[image_id]["json"]["labels"]


def test_ids_match_files_with_or_without_extension(tags: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(tags[0].parent, root)
    rows = _rows(root / "labels.csv")
    _write_rows(root / "labels.csv", [rows[0]] + [[r[0] + ".jpg" if n % 2 else r[0], *r[1:]]
                                                  for n, r in enumerate(rows[1:])])
    assert _pack(root / "labels.csv", tmp_path / "with-ext") == 0
    assert _shard_bytes(tmp_path / "with-ext") == _shard_bytes(tags[1])
    # img_0003 as a PNG: the id without extension finds it; the sample id stays img_0003.
    with Image.open(root / "images" / "img_0003.jpg") as image:
        image.save(root / "images" / "img_0003.png")
    (root / "images" / "img_0003.jpg").unlink()
    _write_rows(root / "labels.csv", rows)
    assert _pack(root / "labels.csv", tmp_path / "png") == 0
    assert "img_0003" in {i for e in load_manifest(tmp_path / "png")["splits"].values() for i in e["ids"]}


def test_a_header_of_neither_form_is_refused_at_once(tags: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("image,tags\nimg_0000,heron\n")
    assert main(["--labels", str(bad), "--images", str(tags[0].parent / "images"), "--out", str(tmp_path / "o")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(bad) in err and "'id,labels'" in err and "'id,<class>,<class>,...'" in err
    assert not (tmp_path / "o").exists()


# --- bad rows: refused naming the id and why (nothing written), or dropped and listed with --skip-bad

def _edit(root: Path, change) -> None:
    rows = _rows(root / "labels.csv")
    change(rows)
    _write_rows(root / "labels.csv", rows)


def _unknown_class(root: Path) -> tuple[str, str, list[str]]:
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    _edit(root, lambda rows: rows[3].__setitem__(1, "heron walrus"))
    return "img_0002", "line 4: unknown class 'walrus' (not in --classes)", ["--classes", str(root / "classes.txt")]


def _not_zero_one(root: Path) -> tuple[str, str, list[str]]:
    rows = _rows(root / "labels.csv")
    onehot = [["id", *CLASSES]] + [[r[0], *("1" if c in r[1].split() else "0" for c in CLASSES)] for r in rows[1:]]
    onehot[5][3] = "yes"
    _write_rows(root / "labels.csv", onehot)
    return onehot[5][0], f"line 6: column '{CLASSES[2]}' holds 'yes', expected 0 or 1", []


def _listed_twice(root: Path) -> tuple[str, str, list[str]]:
    _edit(root, lambda rs: rs.append([rs[4][0] + ".jpg", "tulip"]))
    return "img_0003", f"listed twice in labels.csv (lines 5 and {ROWS + 2})", []


def _missing_image(root: Path) -> tuple[str, str, list[str]]:
    (root / "images" / "img_0007.jpg").unlink()
    return "img_0007", "line 9: no image img_0007.*", []


def _broken_image(root: Path) -> tuple[str, str, list[str]]:
    file = root / "images" / "img_0010.jpg"
    file.write_bytes(file.read_bytes()[:200])
    return "img_0010", "img_0010.jpg: image does not decode", []


BAD = {"unknown-class": _unknown_class, "not-0-or-1": _not_zero_one, "listed-twice": _listed_twice,
       "missing-image": _missing_image, "broken-image": _broken_image}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_rows_are_refused_by_id_or_skipped_and_listed(tags: tuple[Path, Path], tmp_path: Path, case: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "set"
    shutil.copytree(tags[0].parent, root)
    bad_id, reason, extra = BAD[case](root)
    assert _pack(root / "labels.csv", tmp_path / "shards", *extra) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert bad_id in err and reason in err and "nothing was written" in err
    assert not (tmp_path / "shards").exists()
    assert _pack(root / "labels.csv", tmp_path / "shards", *extra, "--skip-bad") == 0
    err = " ".join(capsys.readouterr().err.split())
    skipped = load_manifest(tmp_path / "shards")["skipped"]
    assert [s["id"] for s in skipped] == [bad_id] and reason in skipped[0]["reason"]
    assert bad_id in err and "dropped by --skip-bad" in err


def test_onehot_columns_must_be_the_classes_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = _make(tmp_path / "set", form="onehot")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES[1:]) + "\n")
    assert _pack(csv_path, tmp_path / "o", "--classes", str(tmp_path / "classes.txt")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"column(s) {CLASSES[0]} not in --classes" in err and not (tmp_path / "o").exists()
