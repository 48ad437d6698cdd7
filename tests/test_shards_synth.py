"""shards.synth: a VOCdevkit tree that torchvision and the devkit conventions accept (and the coco and csv formats)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCDetection

from shards.annotations import parse_annotation
from shards.classes import VOC_CLASSES
from shards.synth import DEFAULT_BACKGROUNDS, _choose_classes, generate, main

SPLIT_SIZES = {"train": 24, "val": 16, "trainval": 40, "test": 17}  # conftest's sizes


def _ids(voc: Path, split: str) -> list[str]:
    return (voc / "VOC2007" / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


@pytest.mark.parametrize("split", list(SPLIT_SIZES))
def test_torchvision_voc_detection_reads_every_split(voc_root: Path, split: str) -> None:
    # VOCDetection wants the folder *above* VOCdevkit.
    dataset = VOCDetection(str(voc_root.parent), year="2007", image_set=split)
    assert len(dataset) == SPLIT_SIZES[split]
    image, target = dataset[len(dataset) - 1]
    annotation = target["annotation"]
    assert image.mode == "RGB"
    assert image.size == (int(annotation["size"]["width"]), int(annotation["size"]["height"]))
    for obj in annotation["object"]:
        assert obj["name"] in VOC_CLASSES
        box = [int(obj["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert 1 <= box[0] < box[2] <= image.size[0] and 1 <= box[1] < box[3] <= image.size[1]


def test_splits_are_disjoint_and_trainval_is_their_union(voc_root: Path) -> None:
    train, val, test = (set(_ids(voc_root, s)) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert _ids(voc_root, "trainval") == sorted(train | val)


def test_class_files_hold_devkit_states_of_the_annotations(voc_root: Path) -> None:
    main_dir = voc_root / "VOC2007" / "ImageSets" / "Main"
    seen_states: Counter = Counter()
    for name in VOC_CLASSES:
        for line in (main_dir / f"{name}_trainval.txt").read_text().splitlines():
            image_id, state = line.split()
            objects = parse_annotation((voc_root / "VOC2007" / "Annotations" / f"{image_id}.xml").read_bytes()).objects
            mine = [o for o in objects if o.name == name]
            expected = 1 if any(not o.difficult for o in mine) else 0 if mine else -1
            assert int(state) == expected, (name, image_id)
            seen_states[int(state)] += 1
    assert seen_states[1] and seen_states[-1]


def test_annotations_use_the_voc_schema(voc_root: Path) -> None:
    root = ET.parse(voc_root / "VOC2007" / "Annotations" / "000001.xml").getroot()
    assert [child.tag for child in root][:5] == ["folder", "filename", "source", "size", "segmented"]
    assert root.findtext("filename") == "000001.jpg"
    for obj in root.iter("object"):
        assert {c.tag for c in obj} == {"name", "pose", "truncated", "difficult", "bndbox"}


def test_images_are_voc_sized_photographic_jpegs(voc_root: Path) -> None:
    files = sorted((voc_root / "VOC2007" / "JPEGImages").glob("*.jpg"))
    sizes = Counter()
    for file in files:
        with Image.open(file) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes[image.size] += 1
            assert max(image.size) == 500 and min(image.size) >= 300
    assert sizes[(500, 375)] > len(files) / 3 and sizes[(375, 500)] > 0
    # Textured content: JPEG sizes like VOC's (tens of KB), not flat colours (a few KB).
    median_kb = np.median([f.stat().st_size for f in files]) / 1024
    assert 40 < median_kb < 160


def test_objects_vary_in_count_and_flags(voc_root: Path) -> None:
    annotations = [parse_annotation(p.read_bytes()) for p in (voc_root / "VOC2007" / "Annotations").glob("*.xml")]
    counts = [len(a.objects) for a in annotations]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) > 1
    objects = [o for a in annotations for o in a.objects]
    assert any(o.truncated for o in objects) and any(o.difficult for o in objects)
    assert sum(o.difficult for o in objects) < len(objects) / 3


def test_class_frequencies_are_skewed_like_voc() -> None:
    images = [set(_choose_classes(np.random.default_rng([1, i]))) for i in range(3000)]
    frequency = Counter(c for classes in images for c in classes)
    assert frequency.most_common(1)[0][0] == "person"
    assert 0.33 < frequency["person"] / len(images) < 0.47
    assert set(frequency) == set(VOC_CLASSES)
    assert frequency["sheep"] < frequency["car"] / 4


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    sizes = {"train": 2, "test": 1}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate(tmp_path / name, sizes, seed=seed, backgrounds_dir=None)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 2 + 2 + 20 * 2  # images + annotations, train/test lists, class files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    jpeg = Path("VOC2007/JPEGImages/000001.jpg")
    assert (tmp_path / "a" / jpeg).read_bytes() != (tmp_path / "c" / jpeg).read_bytes()


def test_jobs_draw_the_same_bytes(tmp_path: Path) -> None:
    sizes = {"train": 5, "val": 3, "test": 4}
    generate(tmp_path / "one", sizes, seed=3, backgrounds_dir=DEFAULT_BACKGROUNDS)
    generate(tmp_path / "three", sizes, seed=3, backgrounds_dir=DEFAULT_BACKGROUNDS, jobs=3)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 12 * 2 + 4 + 20 * 4  # images + annotations, train/val/trainval/test lists, class files
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "three" / rel).read_bytes(), rel


def test_cli_writes_the_requested_sizes(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "VOCdevkit"), "--train", "3", "--val", "2", "--test", "1",
                 "--backgrounds", str(tmp_path / "no-photos-here")]) == 0
    assert [len(_ids(tmp_path / "VOCdevkit", s)) for s in ("train", "val", "trainval", "test")] == [3, 2, 5, 1]


def test_hide_test_labels_writes_what_a_course_hands_out(tmp_path: Path) -> None:
    argv = ["--train", "2", "--val", "1", "--test", "3", "--backgrounds", str(tmp_path / "no-photos-here")]
    assert main(["--out", str(tmp_path / "open"), *argv]) == 0
    assert main(["--out", str(tmp_path / "hidden"), *argv, "--hide-test-labels"]) == 0
    hidden, shown = tmp_path / "hidden", tmp_path / "open"
    test_ids = _ids(hidden, "test")
    assert len(test_ids) == 3 and test_ids == _ids(shown, "test")
    for image_id in test_ids:  # the same images, without their annotations
        assert not (hidden / "VOC2007" / "Annotations" / f"{image_id}.xml").exists()
        jpg = Path("VOC2007") / "JPEGImages" / f"{image_id}.jpg"
        assert (hidden / jpg).read_bytes() == (shown / jpg).read_bytes()
    lists = {p.name for p in (hidden / "VOC2007" / "ImageSets" / "Main").iterdir()}
    assert lists == {p.name for p in (shown / "VOC2007" / "ImageSets" / "Main").iterdir()} - \
        {f"{c}_test.txt" for c in VOC_CLASSES}
    assert "test.txt" in lists
    labeled = _ids(hidden, "train") + _ids(hidden, "val")
    assert all((hidden / "VOC2007" / "Annotations" / f"{i}.xml").is_file() for i in labeled)
    with pytest.raises(SystemExit):  # argparse error: nothing to hide
        main(["--out", str(tmp_path / "x"), "--train", "1", "--val", "0", "--test", "0", "--hide-test-labels"])


def test_format_coco_writes_the_official_layout(tmp_path: Path) -> None:
    out = tmp_path / "coco"
    assert main(["--format", "coco", "--out", str(out), "--train", "4", "--val", "3", "--test", "2",
                 "--hide-test-labels", "--max-side", "64", "--backgrounds", str(tmp_path / "none")]) == 0
    for tree, n in (("train2014", 4), ("val2014", 3), ("test2014", 2)):
        names = sorted(p.name for p in (out / tree).iterdir())
        assert len(names) == n and all(re.fullmatch(rf"COCO_{tree}_\d{{12}}\.jpg", name) for name in names)
    train = json.loads((out / "annotations" / "instances_train2014.json").read_text())
    ids = [c["id"] for c in train["categories"]]
    assert ids == sorted(ids) and ids != list(range(1, len(ids) + 1)) and max(ids) <= 40
    assert any(" " in c["name"] for c in train["categories"])
    assert not set(c["name"] for c in train["categories"]) & set(VOC_CLASSES)
    hidden = json.loads((out / "annotations" / "image_info_test2014.json").read_text())
    assert "annotations" not in hidden and len(hidden["images"]) == 2


def test_format_csv_writes_images_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "csv"
    assert main(["--format", "csv", "--out", str(out), "--rows", "5", "--csv-form", "onehot", "--with-split",
                 "--max-side", "64", "--backgrounds", str(tmp_path / "none")]) == 0
    rows = (out / "labels.csv").read_text().splitlines()
    assert rows[0].startswith("id,") and rows[0].endswith(",split") and len(rows) == 6
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"img_{i:04d}.jpg" for i in range(5)]
