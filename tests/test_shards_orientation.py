"""JPEGs with an EXIF Orientation tag (real JPEGs written by PIL with the tag).

The stored pixels, the json's width/height and the boxes must be in one frame: the one the XML's
<size> says the annotator saw. Upright frame -> turned upright at pack time; stored frame -> kept
as stored; a <size> that cannot tell -> refused by id (or skipped and listed with --skip-bad).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from shards.images import ORIENTATION
from shards.manifest import load_manifest
from shards.pack import main
from shards.synth import generate


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return generate(tmp_path / "VOCdevkit", {"train": 4, "val": 2}, seed=4, backgrounds_dir=None)


def _ids(voc: Path) -> list[str]:
    return (voc / "ImageSets" / "Main" / "train.txt").read_text().split()


def _store_sideways(voc: Path, image_id: str, tag: int) -> np.ndarray:
    """Rewrite the JPEG as a camera does: pixels turned, and a tag saying how to show them upright
    (6: turn 90 degrees clockwise; 3: 180 degrees). Returns the upright pixels."""
    path = voc / "JPEGImages" / f"{image_id}.jpg"
    upright = Image.open(path).convert("RGB")
    stored = upright.rotate(90, expand=True) if tag == 6 else upright.rotate(180)  # counter-clockwise
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    stored.save(path, format="JPEG", quality=95, exif=exif)
    assert Image.open(path).getexif()[ORIENTATION] == tag
    return np.asarray(upright)


def _set_xml_size(voc: Path, image_id: str, width: int, height: int) -> None:
    path = voc / "Annotations" / f"{image_id}.xml"
    text = re.sub(r"<width>\d+</width>", f"<width>{width}</width>", path.read_text())
    path.write_text(re.sub(r"<height>\d+</height>", f"<height>{height}</height>", text))


def _samples(shards: Path, split: str = "train") -> dict[str, dict]:
    urls = [str(shards / name) for name in load_manifest(shards)["splits"][split]["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)}


def _pixels(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert ORIENTATION not in image.getexif(), "the tag must not reach the shards: a reader could turn it twice"
    return np.asarray(image.convert("RGB")).astype(np.float32)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - np.asarray(b, dtype=np.float32)).mean()) < 8


@pytest.mark.parametrize("keep_original", [False, True], ids=["resized", "keep-original"])
def test_boxes_pixels_and_size_stay_in_the_frame_the_xml_names(voc: Path, tmp_path: Path, keep_original: bool) -> None:
    upright_id, stored_id = _ids(voc)[:2]
    upright = _store_sideways(voc, upright_id, 6)  # XML untouched: <size> is the upright frame
    stored = _store_sideways(voc, stored_id, 6)
    height, width = stored.shape[:2]
    _set_xml_size(voc, stored_id, height, width)  # <size> of the stored (sideways) frame: boxes were drawn there
    boxes_before = {i: json.loads(json.dumps(_xml_boxes(voc, i))) for i in (upright_id, stored_id)}
    out = tmp_path / "shards"
    assert main(["--voc", str(voc), "--out", str(out), *(["--keep-original"] if keep_original else [])]) == 0
    samples = _samples(out)

    record = json.loads(samples[upright_id]["json"])
    assert (record["width"], record["height"]) == (upright.shape[1], upright.shape[0])  # turned upright
    pixels = _pixels(samples[upright_id]["jpg"])
    expected = upright if keep_original else np.asarray(Image.fromarray(upright).resize(pixels.shape[1::-1]))
    assert _close(pixels, expected)
    assert [o["bbox"] for o in record["objects"]] == boxes_before[upright_id]

    record = json.loads(samples[stored_id]["json"])
    assert (record["width"], record["height"]) == (height, width)  # kept as stored: 90 degrees from upright
    pixels = _pixels(samples[stored_id]["jpg"])
    sideways = np.asarray(Image.fromarray(stored).rotate(90, expand=True))
    expected = sideways if keep_original else np.asarray(Image.fromarray(sideways).resize(pixels.shape[1::-1]))
    assert _close(pixels, expected)
    assert [o["bbox"] for o in record["objects"]] == boxes_before[stored_id]


def _xml_boxes(voc: Path, image_id: str) -> list[list[int]]:
    text = (voc / "Annotations" / f"{image_id}.xml").read_text()
    return [[int(v) for v in box] for box in re.findall(
        r"<xmin>(\d+)</xmin>\s*<ymin>(\d+)</ymin>\s*<xmax>(\d+)</xmax>\s*<ymax>(\d+)</ymax>", text)]


def test_a_turn_the_xml_size_cannot_tell_is_refused_by_id_or_skipped_and_listed(voc: Path, tmp_path: Path,
                                                                                capsys) -> None:
    turned = _ids(voc)[2]
    _store_sideways(voc, turned, 3)  # 180 degrees: the same <size> in both frames
    assert main(["--voc", str(voc), "--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert f"train {turned}: JPEGImages/{turned}.jpg: EXIF orientation 3 (turned 180 degrees)" in err
    assert "fits both the stored and the upright frame" in err and not (tmp_path / "refused").exists()
    assert main(["--voc", str(voc), "--out", str(tmp_path / "skipped"), "--skip-bad"]) == 0
    manifest = load_manifest(tmp_path / "skipped")
    assert [s["id"] for s in manifest["skipped"]] == [turned] and manifest["splits"]["train"]["skipped_count"] == 1
    assert turned not in manifest["splits"]["train"]["ids"]


def test_an_image_without_annotation_is_turned_upright(tmp_path: Path) -> None:
    voc = generate(tmp_path / "VOCdevkit", {"train": 2, "val": 1, "test": 2}, seed=4, backgrounds_dir=None,
                   hidden={"test"})
    test_id = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    upright = _store_sideways(voc, test_id, 6)
    assert main(["--voc", str(voc), "--out", str(tmp_path / "shards"), "--keep-original"]) == 0
    sample = _samples(tmp_path / "shards", "test")[test_id]
    assert _close(_pixels(sample["jpg"]), upright)
    assert (json.loads(sample["json"])["width"], json.loads(sample["json"])["height"]) == upright.shape[1::-1]
