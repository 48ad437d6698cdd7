"""Test sets with hidden labels: a split without any annotation packs unlabeled and reads with sentinel states.

Real files throughout: shards.synth makes the VOC trees (or annotations are deleted from a copy),
shards.pack writes real tars, shards.reader.eval_loader reads them.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds

from shards.annotations import UNLABELED_STATE
from shards.classes import VOC, VOC_CLASSES
from shards.manifest import ManifestError, is_labeled, load_manifest, skipped_ids, write_manifest
from shards.pack import main as pack_main
from shards.pack import summary_lines
from shards.reader import CorruptSampleWarning, eval_loader, train_loader
from shards.synth import generate

SIZES = {"train": 4, "val": 3, "test": 7}
HIDDEN_LINE = "test: 7 images in 3 shards, labels hidden (no annotations): packed unlabeled"


def _ids(voc: Path, split: str) -> list[str]:
    return (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def _records(shards_dir: Path, split: str) -> dict[str, dict]:
    urls = [str(shards_dir / n) for n in load_manifest(shards_dir)["splits"][split]["shards"]]
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)
    return {s["__key__"]: {"jpg": s["jpg"], "json": json.loads(s["json"])} for s in dataset}


def _pack(voc: Path, out: Path, *extra: str) -> int:
    return pack_main(["--voc", str(voc), "--out", str(out), "--samples-per-shard", "3", *extra])


@pytest.fixture(scope="module")
def hidden_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC2007 tree whose test split comes as a course hands it out: images + test.txt only."""
    out = tmp_path_factory.mktemp("hidden") / "VOCdevkit"
    return generate(out, SIZES, seed=2, backgrounds_dir=None, hidden={"test"})


@pytest.fixture(scope="module")
def hidden_shards(hidden_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hidden-packed") / "shards"
    assert _pack(hidden_voc, out) == 0
    return out


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A writable, fully annotated tree with the same sizes, to break."""
    return generate(tmp_path / "VOCdevkit", SIZES, seed=2, backgrounds_dir=None)


def test_split_without_annotations_packs_unlabeled_without_a_flag(hidden_voc: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "shards"
    assert _pack(hidden_voc, out) == 0
    assert HIDDEN_LINE in capsys.readouterr().err
    manifest = load_manifest(out)
    test = manifest["splits"]["test"]
    assert (test["labeled"], test["positives"], test["skipped_count"]) == (False, None, 0)
    assert test["ids"] == sorted(_ids(hidden_voc, "test")) and test["count"] == 7
    assert not is_labeled(test) and manifest["skipped"] == []
    for split in ("train", "val"):
        assert is_labeled(manifest["splits"][split]) and manifest["splits"][split]["labeled"] is True
        assert sum(manifest["splits"][split]["positives"].values()) > 0
    records = _records(out, "test")
    assert sorted(records) == test["ids"]
    for image_id, sample in records.items():
        assert sample["json"]["labels"] is None and sample["json"]["objects"] is None
        assert sample["json"]["id"] == image_id and sample["json"]["width"] in (375, 500)
        assert sample["jpg"][:2] == b"\xff\xd8"


def test_eval_loader_yields_every_unlabeled_id_once_with_sentinel_states(hidden_shards: Path) -> None:
    seen: Counter = Counter()
    for rank in (0, 1):
        for images, states, ids in eval_loader(hidden_shards, split="test", batch_size=2, rank=rank,
                                               world_size=2, num_workers=2, image_size=32):
            assert images.shape == (len(ids), 3, 32, 32)
            assert states.dtype == torch.int8 and states.shape == (len(ids), VOC.num_classes)
            assert bool((states == UNLABELED_STATE).all())
            seen.update(ids)
    assert sorted(seen) == load_manifest(hidden_shards)["splits"]["test"]["ids"]
    assert set(seen.values()) == {1}
    with pytest.raises(ValueError, match="split 'test' .* packed without annotations"):
        train_loader(hidden_shards, batch_size=2, rank=0, world_size=1, num_workers=0, seed=0, epoch=0, split="test",
                     preset="none", image_size=32)


def test_samples_that_contradict_the_manifest_are_reported_not_read(hidden_shards: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(hidden_shards, tmp_path / "shards"))
    manifest = load_manifest(copy)
    manifest["splits"]["test"].update(labeled=True, positives={name: 0 for name in VOC_CLASSES})
    write_manifest(copy, manifest)
    with pytest.warns(CorruptSampleWarning, match="labels are null but manifest.json says the split is labeled"):
        batches = list(eval_loader(copy, split="test", batch_size=2, rank=0, world_size=1, num_workers=0,
                                   image_size=32))
    assert batches == []  # the trainer's exactly-once check then names every missing id


def test_deleting_the_test_annotations_of_a_copy_packs_the_same_images_unlabeled(
        voc_root: Path, shards_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The per-class test files stay: they may exist for a hidden split and are not needed.
    copy = Path(shutil.copytree(voc_root / "VOC2007", tmp_path / "VOC2007"))
    for image_id in _ids(copy, "test"):
        (copy / "Annotations" / f"{image_id}.xml").unlink()
    out = tmp_path / "shards"
    assert pack_main(["--voc", str(copy), "--out", str(out), "--samples-per-shard", "5"]) == 0
    assert "test: 17 images in 4 shards, labels hidden (no annotations): packed unlabeled" in capsys.readouterr().err
    labeled, hidden = _records(shards_dir, "test"), _records(out, "test")
    assert {k: v["jpg"] for k, v in hidden.items()} == {k: v["jpg"] for k, v in labeled.items()}
    assert all(v["json"]["labels"] is None for v in hidden.values())
    assert _records(out, "val") == _records(shards_dir, "val")


def test_official_style_test_tar_without_annotations_packs_unlabeled(hidden_voc: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "VOCtest.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(hidden_voc / "ImageSets" / "Main" / "test.txt", arcname="VOCdevkit/VOC2007/ImageSets/Main/test.txt")
        for image_id in _ids(hidden_voc, "test"):
            tar.add(hidden_voc / "JPEGImages" / f"{image_id}.jpg", arcname=f"VOCdevkit/VOC2007/JPEGImages/{image_id}.jpg")
    assert _pack(path, tmp_path / "shards") == 0
    assert HIDDEN_LINE in capsys.readouterr().err
    assert list(load_manifest(tmp_path / "shards")["splits"]) == ["test"]
    assert load_manifest(tmp_path / "shards")["splits"]["test"]["labeled"] is False


def test_partly_annotated_split_still_fails_naming_the_ids(voc: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    lost = _ids(voc, "test")[2:4]
    for image_id in lost:
        (voc / "Annotations" / f"{image_id}.xml").unlink()
    out = tmp_path / "shards"
    assert _pack(voc, out) == 1
    err = capsys.readouterr().err
    assert "2 bad sample(s)" in err and "labels hidden" not in err
    for image_id in lost:
        assert f"test {image_id}: no annotation Annotations/{image_id}.xml" in err
    assert not out.exists()


def test_skip_bad_summary_names_the_dropped_test_ids(voc: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    lost = sorted(_ids(voc, "test"))[2:4]
    for image_id in lost:
        (voc / "Annotations" / f"{image_id}.xml").unlink()
    out = tmp_path / "shards"
    assert _pack(voc, out, "--skip-bad") == 0
    err = capsys.readouterr().err
    assert (f"test: 2 of 7 listed images dropped by --skip-bad (reasons in manifest.json 'skipped'); "
            f"a submission made from these shards lacks their rows: {', '.join(lost)}") in err
    manifest = load_manifest(out)
    test = manifest["splits"]["test"]
    assert (test["labeled"], test["count"], test["skipped_count"]) == (True, 5, 2)
    assert skipped_ids(manifest, "test") == lost and not set(lost) & set(test["ids"])
    assert manifest["splits"]["train"]["skipped_count"] == 0 and "train: 4 images in 2 shards" in err


def test_unlabeled_split_with_a_missing_image_fails_or_drops_it_visibly(hidden_voc: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    copy = Path(shutil.copytree(hidden_voc, tmp_path / "VOC2007"))
    gone = _ids(copy, "test")[0]
    (copy / "JPEGImages" / f"{gone}.jpg").unlink()
    assert _pack(copy, tmp_path / "failed") == 1
    assert f"test {gone}: no image JPEGImages/{gone}.jpg" in capsys.readouterr().err
    assert _pack(copy, tmp_path / "shards", "--skip-bad") == 0
    err = capsys.readouterr().err
    assert "test: 6 images in 2 shards, labels hidden (no annotations): packed unlabeled" in err
    assert "test: 1 of 7 listed images dropped by --skip-bad" in err and err.rstrip().count(gone) >= 2
    test = load_manifest(tmp_path / "shards")["splits"]["test"]
    assert (test["labeled"], test["skipped_count"]) == (False, 1)


def test_summary_names_the_first_ten_dropped_ids_and_counts_the_rest() -> None:
    ids = [f"{i:06d}" for i in range(1, 13)]
    manifest = {"splits": {"val": {"count": 30, "shards": ["val-00000.tar"], "labeled": True}},
                "skipped": [{"id": i, "split": "val", "reason": "x"} for i in reversed(ids)]}
    assert summary_lines(manifest) == [
        "val: 30 images in 1 shard",
        f"val: 12 of 42 listed images dropped by --skip-bad (reasons in manifest.json 'skipped'): "
        f"{', '.join(ids[:10])} and 2 more",
    ]


def test_manifests_without_the_new_keys_read_as_labeled(shards_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(shards_dir)
    for record in manifest["splits"].values():
        del record["labeled"], record["skipped_count"]
    manifest["skipped"] = [{"id": "000099", "split": "test", "reason": "no image"}]
    write_manifest(tmp_path, manifest)
    old = load_manifest(tmp_path)
    assert all(is_labeled(record) for record in old["splits"].values())
    assert skipped_ids(old, "test") == ["000099"] and skipped_ids(old, "val") == []
    manifest["splits"]["test"]["labeled"] = "no"
    write_manifest(tmp_path, manifest)
    with pytest.raises(ManifestError, match="split 'test' has 'labeled': 'no', expected true or false"):
        load_manifest(tmp_path)
    manifest["splits"]["test"]["labeled"] = True
    manifest["splits"]["test"]["positives"] = None
    write_manifest(tmp_path, manifest)
    with pytest.raises(ManifestError, match="split 'test' is labeled but its 'positives' is None"):
        load_manifest(tmp_path)
