"""shards.pack: folder and official-tar sources -> webdataset shards + manifest.json."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image
from rich.console import Console

from shards.classes import VOC_CLASSES
from shards.manifest import ManifestError, load_manifest
from shards.pack import PackOptions, main, pack

SPLITS = ("train", "val", "test")


def _read_shards(shards_dir: Path, split: str) -> dict[str, dict]:
    """Every sample of a split, by key, read with webdataset itself."""
    urls = [str(shards_dir / name) for name in load_manifest(shards_dir)["splits"][split]["shards"]]
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)
    return {s["__key__"]: {"jpg": s["jpg"], "json": json.loads(s["json"])} for s in dataset}


def _devkit_states(voc_root: Path, split: str) -> dict[str, list[int]]:
    """id -> 20 states, from the devkit's <class>_<split>.txt files."""
    states: dict[str, list[int]] = {}
    for c, name in enumerate(VOC_CLASSES):
        text = (voc_root / "VOC2007" / "ImageSets" / "Main" / f"{name}_{split}.txt").read_text()
        for line in text.splitlines():
            image_id, state = line.split()
            states.setdefault(image_id, [0] * len(VOC_CLASSES))[c] = int(state)
    return states


def _official_tars(voc_root: Path, out: Path) -> list[Path]:
    """The two official archives' layout (VOCdevkit/VOC2007/... inside), built from voc_root."""
    voc = voc_root / "VOC2007"
    main_dir = voc / "ImageSets" / "Main"
    tars = []
    for tar_name, splits in (("VOCtrainval_06-Nov-2007.tar", ("train", "val", "trainval")),
                             ("VOCtest_06-Nov-2007.tar", ("test",))):
        ids = sorted({i for s in splits for i in (main_dir / f"{s}.txt").read_text().split()})
        path = out / tar_name
        with tarfile.open(path, "w") as tar:
            for s in splits:
                for f in [main_dir / f"{s}.txt"] + [main_dir / f"{c}_{s}.txt" for c in VOC_CLASSES]:
                    tar.add(f, arcname=f"VOCdevkit/VOC2007/ImageSets/Main/{f.name}")
            for image_id in ids:
                tar.add(voc / "Annotations" / f"{image_id}.xml", arcname=f"VOCdevkit/VOC2007/Annotations/{image_id}.xml")
                tar.add(voc / "JPEGImages" / f"{image_id}.jpg", arcname=f"VOCdevkit/VOC2007/JPEGImages/{image_id}.jpg")
        tars.append(path)
    return tars


def test_manifest_describes_every_split(voc_root: Path, shards_dir: Path) -> None:
    manifest = load_manifest(shards_dir)
    assert manifest["classes"] == list(VOC_CLASSES)
    assert manifest["skipped"] == []
    assert manifest["image_policy"]["short_side_max"] == 256
    for split in SPLITS:
        record = manifest["splits"][split]
        listed = sorted((voc_root / "VOC2007" / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
        assert record["ids"] == listed and record["count"] == len(listed)
        # 5 per shard: several shards, the last one partly filled.
        assert record["shards"] == [f"{split}-{i:05d}.tar" for i in range(-(-len(listed) // 5))]
        assert sorted(p.name for p in shards_dir.glob(f"{split}-*.tar")) == record["shards"]
        states = _devkit_states(voc_root, split)
        for c, name in enumerate(VOC_CLASSES):
            assert record["positives"][name] == sum(s[c] == 1 for s in states.values())


@pytest.mark.parametrize("split", SPLITS)
def test_sample_labels_equal_the_devkit_class_files(voc_root: Path, shards_dir: Path, split: str) -> None:
    samples = _read_shards(shards_dir, split)
    expected = _devkit_states(voc_root, split)
    assert set(samples) == set(expected)
    for image_id, sample in samples.items():
        record = sample["json"]
        assert record["id"] == image_id
        assert record["labels"] == expected[image_id]
        assert {"name", "difficult", "truncated", "bbox"} <= set(record["objects"][0])
        # Stored with short side 256, RGB; json keeps the original size.
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            assert image.mode == "RGB" and min(image.size) == 256
            original = Image.open(voc_root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg").size
            assert (record["width"], record["height"]) == original
            assert (image.size[0] > image.size[1]) == (original[0] > original[1])


def test_plain_tar_reads_the_shards(shards_dir: Path) -> None:
    with tarfile.open(shards_dir / "train-00000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 10 and names[:2] == [names[0].split(".")[0] + ".jpg", names[0].split(".")[0] + ".json"]


def test_official_tar_layout_packs_like_the_folder(voc_root: Path, shards_dir: Path, tmp_path: Path) -> None:
    tars = _official_tars(voc_root, tmp_path)
    out = tmp_path / "from-tars"
    assert main(["--voc", str(tars[0]), "--voc", str(tars[1]), "--out", str(out), "--samples-per-shard", "5"]) == 0
    for split in SPLITS:
        assert _read_shards(out, split) == _read_shards(shards_dir, split)
    assert [Path(s).name for s in load_manifest(out)["source"]] == [t.name for t in tars]


def test_voc2007_folder_and_keep_original(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "originals"
    assert main(["--voc", str(voc_root / "VOC2007"), "--out", str(out), "--keep-original"]) == 0
    manifest = load_manifest(out)
    assert manifest["image_policy"]["short_side_max"] is None
    sample = _read_shards(out, "val")
    image_id = manifest["splits"]["val"]["ids"][0]
    # An RGB JPEG kept at its size keeps its exact bytes.
    assert sample[image_id]["jpg"] == (voc_root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg").read_bytes()


def test_output_is_deterministic(voc_root: Path, shards_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    pack([voc_root], again, PackOptions(samples_per_shard=5), Console(quiet=True))
    # Files only: the device loader's decoded cache (SHARDS/cache/) is no part of the pack.
    for name in sorted(p.name for p in shards_dir.iterdir() if p.is_file()):
        assert (again / name).read_bytes() == (shards_dir / name).read_bytes(), name


@pytest.mark.parametrize("make_path, expected", [
    (lambda tmp: tmp / "missing", "no such file or folder"),
    (lambda tmp: (tmp / "notes.txt").write_text("hi") and tmp / "notes.txt", "not a tar archive"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a VOC folder"),
], ids=["missing", "not-a-tar", "not-a-voc-folder"])
def test_wrong_paths_get_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture, make_path, expected) -> None:
    path = make_path(tmp_path)
    assert main(["--voc", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_shard_folder(voc_root: Path, shards_dir: Path, capsys: pytest.CaptureFixture) -> None:
    before = sorted(p.name for p in shards_dir.iterdir())
    assert main(["--voc", str(voc_root), "--out", str(shards_dir)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in shards_dir.iterdir()) == before


def test_load_manifest_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=str(tmp_path / "manifest.json")):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
