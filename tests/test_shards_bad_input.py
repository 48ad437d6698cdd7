"""shards.pack on bad input: fail naming every bad id (nothing written), or --skip-bad."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shards.pack import main
from shards.synth import generate


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A tiny writable VOCdevkit (train 4, val 2) to break."""
    generate(tmp_path / "VOCdevkit", {"train": 4, "val": 2}, seed=1, backgrounds_dir=None)
    return tmp_path / "VOCdevkit" / "VOC2007"


def _first_train_id(voc: Path) -> str:
    return (voc / "ImageSets" / "Main" / "train.txt").read_text().split()[0]


def _truncate_jpeg(voc: Path, image_id: str) -> None:
    path = voc / "JPEGImages" / f"{image_id}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_jpeg(voc: Path, image_id: str) -> None:
    (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"this is not a JPEG file")


def _broken_xml(voc: Path, image_id: str) -> None:
    (voc / "Annotations" / f"{image_id}.xml").write_text("<annotation><object><name>dog</name>")


def _unknown_class(voc: Path, image_id: str) -> None:
    path = voc / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    start = text.index("<name>") + len("<name>")
    path.write_text(text[:start] + "unicorn" + text[text.index("</name>", start):])


def _no_image(voc: Path, image_id: str) -> None:
    (voc / "JPEGImages" / f"{image_id}.jpg").unlink()


def _no_annotation(voc: Path, image_id: str) -> None:
    (voc / "Annotations" / f"{image_id}.xml").unlink()


BREAKAGES: dict[str, tuple[Callable[[Path, str], None], str]] = {
    "truncated-jpeg": (_truncate_jpeg, "does not decode"),
    "unreadable-jpeg": (_garbage_jpeg, "does not decode"),
    "unparsable-xml": (_broken_xml, "XML does not parse"),
    "unknown-class": (_unknown_class, "unknown class 'unicorn'"),
    "no-image": (_no_image, "no image JPEGImages/"),
    "no-annotation": (_no_annotation, "no annotation Annotations/"),
}


def _no_leftovers(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_bad_input_fails_naming_the_id_and_writes_nothing(voc: Path, tmp_path: Path, case: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    breakage, reason = BREAKAGES[case]
    image_id = _first_train_id(voc)
    breakage(voc, image_id)
    out = tmp_path / "shards"
    assert main(["--voc", str(voc), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"train {image_id}: " in err and reason in err
    assert _no_leftovers(out)


def test_every_bad_id_is_named_at_once(voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_id = _first_train_id(voc)
    val_id = (voc / "ImageSets" / "Main" / "val.txt").read_text().split()[-1]
    _garbage_jpeg(voc, train_id)
    _unknown_class(voc, val_id)
    out = tmp_path / "shards"
    assert main(["--voc", str(voc), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 bad sample(s)" in err and f"train {train_id}: " in err and f"val {val_id}: " in err
    assert "--skip-bad" in err  # says what to do
    assert _no_leftovers(out)


def test_skip_bad_packs_the_rest_and_lists_the_skipped(voc: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    image_id = _first_train_id(voc)
    _truncate_jpeg(voc, image_id)
    out = tmp_path / "shards"
    assert main(["--voc", str(voc), "--out", str(out), "--skip-bad"]) == 0
    assert f"skipped train {image_id}" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(s["id"], s["split"]) for s in manifest["skipped"]] == [(image_id, "train")]
    assert "does not decode" in manifest["skipped"][0]["reason"]
    assert manifest["splits"]["train"]["count"] == 3 and image_id not in manifest["splits"]["train"]["ids"]
    assert manifest["splits"]["val"]["count"] == 2
