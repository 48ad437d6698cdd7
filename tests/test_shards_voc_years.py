"""Any VOC year, and several sources in one split ("07+12"), for folders and real tars.

Trees made by shards.synth (`year=2012` writes VOC2012 with 2008_ ids); tars made with tarfile from
those trees, as the official archives hold them (VOCdevkit/VOC<year>/...).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from torchvision.datasets import VOCDetection

from cli_in_process import run_module
from shards.manifest import load_manifest
from shards.synth import generate

SIZES_07 = {"train": 6, "val": 4, "test": 5}
SIZES_12 = {"train": 5, "val": 3}  # VOC2012's trainval tar has no test list


@pytest.fixture(scope="module")
def devkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOCdevkit holding VOC2007 (train/val/test) and VOC2012 (train/val), as users unpack both."""
    out = tmp_path_factory.mktemp("years") / "VOCdevkit"
    generate(out, SIZES_07, seed=1, backgrounds_dir=None)
    generate(out, SIZES_12, seed=2, backgrounds_dir=None, year=2012)
    return out


def _tar(folder: Path, out: Path) -> Path:
    """`folder` (a VOCdevkit) as a tar with VOCdevkit/VOC<year>/... inside, like the official ones."""
    with tarfile.open(out, "w") as tar:
        tar.add(folder, arcname="VOCdevkit")
    return out


def _ids(voc: Path, split: str) -> list[str]:
    return sorted((voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split())


def _keys(shards: Path, split: str) -> list[str]:
    urls = [str(shards / name) for name in load_manifest(shards)["splits"][split]["shards"]]
    return [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)]


def _pack(capsys, *args) -> tuple[int, str]:
    code, _, err = run_module("shards.pack", [*args, "--samples-per-shard", "4"], capsys)
    return code, err


def test_synth_year_2012_is_a_voc2012_tree_torchvision_reads(devkit: Path) -> None:
    voc = devkit / "VOC2012"
    assert _ids(voc, "train")[0].startswith("2008_")
    assert "<folder>VOC2012</folder>" in (voc / "Annotations" / f"{_ids(voc, 'val')[0]}.xml").read_text()
    assert len(VOCDetection(str(devkit.parent), year="2012", image_set="trainval")) == 8


def test_a_devkit_holding_only_voc2012_packs_and_the_manifest_says_2012(devkit: Path, tmp_path: Path, capsys) -> None:
    only12 = tmp_path / "VOCdevkit"
    only12.mkdir()
    (only12 / "VOC2012").symlink_to(devkit / "VOC2012")
    code, err = _pack(capsys, "--voc", only12, "--out", tmp_path / "s")
    assert code == 0, err
    manifest = load_manifest(tmp_path / "s")
    assert sorted(manifest["splits"]) == ["train", "val"]
    for split in ("train", "val"):
        record = manifest["splits"][split]
        assert record["years"] == ["2012"] and record["ids"] == _ids(devkit / "VOC2012", split)
        assert [(s["tree"], s["year"]) for s in record["sources"]] == [("VOC2012", "2012")]
    assert "train: 5 images in 2 shards (from VOC2012)" in err


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
def test_several_years_are_refused_in_one_line_unless_year_chooses(devkit: Path, tmp_path: Path, capsys,
                                                                   as_tar: bool) -> None:
    source = _tar(devkit, tmp_path / "VOCdevkit.tar") if as_tar else devkit
    code, err = _pack(capsys, "--voc", source, "--out", tmp_path / "refused")
    assert code == 2 and not (tmp_path / "refused").exists()
    assert err.strip().count("\n") == 0, err  # one line, naming both years and how to choose
    assert f"--voc {source} holds several VOC trees (VOC2007, VOC2012): choose one with --year 2007 or --year 2012" \
        in err
    code, err = _pack(capsys, "--voc", source, "--year", "2012", "--out", tmp_path / "y12")
    assert code == 0, err
    assert load_manifest(tmp_path / "y12")["splits"]["train"]["ids"] == _ids(devkit / "VOC2012", "train")
    code, err = _pack(capsys, "--voc", source, "--year", "2010", "--out", tmp_path / "y10")
    assert code == 2 and "holds VOC2007, VOC2012, none of --year 2010" in err


def test_07_plus_12_is_one_pack_command_for_folders_and_tars(devkit: Path, tmp_path: Path, capsys) -> None:
    voc07, voc12 = devkit / "VOC2007", devkit / "VOC2012"
    code, err = _pack(capsys, "--voc", voc07, "--voc", voc12, "--out", tmp_path / "folders")
    assert code == 0, err
    manifest = load_manifest(tmp_path / "folders")
    for split in ("train", "val"):
        both = sorted(_ids(voc07, split) + _ids(voc12, split))
        record = manifest["splits"][split]
        assert record["ids"] == both and sorted(_keys(tmp_path / "folders", split)) == both
        assert record["years"] == ["2007", "2012"]
        assert [(s["tree"], s["listed"]) for s in record["sources"]] == [("VOC2007", SIZES_07[split]),
                                                                           ("VOC2012", SIZES_12[split])]
    assert manifest["splits"]["test"]["ids"] == _ids(voc07, "test") and manifest["splits"]["test"]["years"] == ["2007"]
    assert "train: 11 images in 3 shards (from VOC2007 + VOC2012)" in err

    # The same from tars: one VOCdevkit tar with both years and --year 2007 --year 2012: the same shards.
    tar = _tar(devkit, tmp_path / "both.tar")
    code, err = _pack(capsys, "--voc", tar, "--year", "2007", "--year", "2012", "--out", tmp_path / "tars")
    assert code == 0, err
    for name in sorted(p.name for p in (tmp_path / "folders").glob("*.tar")):
        assert (tmp_path / "tars" / name).read_bytes() == (tmp_path / "folders" / name).read_bytes(), name
    assert load_manifest(tmp_path / "tars")["splits"]["val"]["years"] == ["2007", "2012"]

    # And from one tar per year, as the releases come (VOCtrainval_06-Nov-2007.tar, VOCtrainval_11-May-2012.tar).
    per_year = []
    for year in ("2007", "2012"):
        with tarfile.open(tmp_path / f"VOC{year}.tar", "w") as archive:
            archive.add(devkit / f"VOC{year}", arcname=f"VOCdevkit/VOC{year}")
        per_year.append(tmp_path / f"VOC{year}.tar")
    code, err = _pack(capsys, "--voc", per_year[0], "--voc", per_year[1], "--out", tmp_path / "two-tars")
    assert code == 0, err
    for name in sorted(p.name for p in (tmp_path / "folders").glob("*.tar")):
        assert (tmp_path / "two-tars" / name).read_bytes() == (tmp_path / "folders" / name).read_bytes(), name


def test_the_same_id_from_two_sources_is_still_refused(devkit: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy" / "VOC2007"
    copy.parent.mkdir()
    copy.symlink_to(devkit / "VOC2007")
    code, err = _pack(capsys, "--voc", devkit / "VOC2007", "--voc", copy, "--out", tmp_path / "dup")
    assert code == 2 and not (tmp_path / "dup").exists()
    first = _ids(devkit / "VOC2007", "train")[0]
    assert "15 image id(s) are listed by two --voc sources" in err and first in err, err


def test_a_split_mixing_labeled_and_hidden_sources_is_refused(devkit: Path, tmp_path: Path, capsys) -> None:
    hidden = generate(tmp_path / "hidden", {"test": 3}, seed=3, backgrounds_dir=None, hidden={"test"}, year=2012)
    code, err = _pack(capsys, "--voc", devkit / "VOC2007", "--voc", hidden, "--out", tmp_path / "mixed")
    assert code == 2 and "split 'test'" in err and "labels hidden" in err and "separate shard folders" in err
    assert not (tmp_path / "mixed").exists()


def test_score_takes_year_for_a_devkit_with_several_trees(devkit: Path, tmp_path: Path, capsys) -> None:
    from shards.labels import voc_split_labels
    from shards.classes import VOC_CLASSES
    from trainer.rundir.outputs import write_submission

    ids, states = voc_split_labels(devkit / "VOC2007", "val")
    submission = tmp_path / "submission.csv"
    write_submission(submission, ids, (states == 1).astype(float), VOC_CLASSES)  # the labels themselves: AP 1 where positives
    code, _, err = run_module("trainer.tools.score", [submission, "--voc", devkit, "--split", "val"], capsys)
    assert code == 2 and "holds several VOC trees (VOC2007, VOC2012): choose one with --year 2007" in err, err
    code, out, err = run_module("trainer.tools.score", [submission, "--voc", devkit, "--year", "2007", "--split", "val"],
                                capsys)
    assert code == 0 and "mAP" in out, err
