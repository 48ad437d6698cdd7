"""shards.pack --coco: a made-up COCO 2014 set (shards.synth --format coco), from its folder and
from the official zips, checked against pycocotools' reading of the same json files."""

from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from rich.console import Console

from shards.classes import class_list
from shards.coco import coco_plan
from shards.labels import shard_split_labels
from shards.manifest import load_manifest
from shards.pack import PackOptions, main, pack_from
from shards.synth import DEFAULT_BACKGROUNDS
from shards.synth_coco import generate_coco
from test_shards_pack import _read_shards

SIZES = {"train": 70, "val": 24, "test": 10}
PER_SHARD = 16


def _pack_args(out: Path, *sources: Path) -> list[str]:
    return [arg for s in sources for arg in ("--coco", str(s))] + ["--out", str(out), "--samples-per-shard",
                                                                    str(PER_SHARD), "--max-size", "64"]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "coco2014"
    generate_coco(root, SIZES, seed=1, backgrounds_dir=DEFAULT_BACKGROUNDS, hide_test_labels=True, max_side=96)
    return root


@pytest.fixture(scope="module")
def coco_shards(coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco-packed") / "shards"
    assert main(_pack_args(out, coco_root)) == 0
    return out


def _stems(root: Path, tree: str) -> list[str]:
    return sorted(p.stem for p in (root / tree).glob("*.jpg"))


def test_labels_equal_pycocotools_reading_of_the_json(coco_root: Path, coco_shards: Path) -> None:
    names = load_manifest(coco_shards)["classes"]
    crowd_seen = 0
    for tree, splits in (("train2014", ("train", "val")), ("val2014", ("test",))):
        coco = COCO(str(coco_root / "annotations" / f"instances_{tree}.json"))
        cat_ids = sorted(coco.getCatIds())
        assert [coco.loadCats(i)[0]["name"] for i in cat_ids] == names
        samples = {k: v for split in splits for k, v in _read_shards(coco_shards, split).items()}
        assert sorted(samples) == sorted(Path(im["file_name"]).stem for im in coco.dataset["images"])
        for image in coco.dataset["images"]:
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None))
            present = {a["category_id"] for a in anns}
            record = samples[Path(image["file_name"]).stem]["json"]
            assert record["labels"] == [1 if c in present else -1 for c in cat_ids], image["file_name"]
            assert record["objects"] == [{"name": coco.loadCats(a["category_id"])[0]["name"], "bbox": a["bbox"],
                                          "iscrowd": a["iscrowd"]} for a in anns]
            assert (record["width"], record["height"]) == (image["width"], image["height"])
            crowd_seen += sum(a["iscrowd"] for a in anns)
    assert crowd_seen > 0  # iscrowd annotations are labels too, as the papers count them


def test_classes_follow_category_ids_with_names_as_written(coco_root: Path, coco_shards: Path) -> None:
    manifest = load_manifest(coco_shards)
    categories = json.loads((coco_root / "annotations" / "instances_val2014.json").read_text())["categories"]
    ordered = sorted(categories, key=lambda c: c["id"])
    assert manifest["classes"] == [c["name"] for c in ordered]
    assert manifest["category_ids"] == [c["id"] for c in ordered]
    assert "hot air balloon" in manifest["classes"] and manifest["background_logit"] is False
    assert class_list(manifest).num_logits == len(categories) == 12
    ids, states = shard_split_labels(coco_shards, "test")  # the scorer's reader takes the class count from it
    assert states.shape == (SIZES["val"], 12) and ids == _stems(coco_root, "val2014")


def test_val_is_held_out_of_train2014_by_the_documented_bucket_rule(coco_root: Path, coco_shards: Path) -> None:
    splits = load_manifest(coco_shards)["splits"]
    stems = _stems(coco_root, "train2014")
    expected_val = [s for s in stems if zlib.crc32(s.encode("utf-8")) % 10 == 0]
    assert splits["val"]["ids"] == expected_val and expected_val
    assert splits["train"]["ids"] == sorted(set(stems) - set(expected_val))
    assert splits["test"]["ids"] == _stems(coco_root, "val2014")
    assert [s["tree"] for s in splits["val"]["sources"]] == ["train2014"] and splits["val"]["years"] == ["2014"]


def test_images_without_annotations_are_negatives_and_counted(coco_root: Path, coco_shards: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    manifest = load_manifest(coco_shards)
    data = json.loads((coco_root / "annotations" / "instances_train2014.json").read_text())
    annotated = {a["image_id"] for a in data["annotations"]}
    empty = {Path(im["file_name"]).stem for im in data["images"] if im["id"] not in annotated}
    assert empty
    for split in ("train", "val"):
        in_split = empty & set(manifest["splits"][split]["ids"])
        assert manifest["splits"][split]["all_negative"] == len(in_split)
        samples = _read_shards(coco_shards, split)
        assert all(samples[i]["json"]["labels"] == [-1] * 12 for i in in_split)
    out = coco_shards.parent / "again"
    assert main(_pack_args(out, coco_root)) == 0
    count = manifest["splits"]["train"]["all_negative"]
    assert f"{count} with no annotation or label, packed as negatives" in capsys.readouterr().err


def test_hidden_test2014_is_packed_unlabeled_as_challenge(coco_root: Path, coco_shards: Path) -> None:
    entry = load_manifest(coco_shards)["splits"]["challenge"]
    assert entry["labeled"] is False and entry["positives"] is None
    assert entry["ids"] == _stems(coco_root, "test2014") and len(entry["ids"]) == SIZES["test"]
    samples = _read_shards(coco_shards, "challenge")
    assert all(s["json"]["labels"] is None and s["json"]["objects"] is None for s in samples.values())


def _official_zips(root: Path, out: Path) -> list[Path]:
    """The five official archives, with their member names (train2014/COCO_train2014_....jpg, annotations/...)."""
    layout = {"train2014.zip": ["train2014"], "val2014.zip": ["val2014"], "test2014.zip": ["test2014"],
              "annotations_trainval2014.zip": ["annotations/instances_train2014.json",
                                               "annotations/instances_val2014.json"],
              "image_info_test2014.zip": ["annotations/image_info_test2014.json"]}
    zips = []
    for name, members in layout.items():
        with zipfile.ZipFile(out / name, "w") as archive:
            for member in members:
                files = sorted((root / member).iterdir()) if (root / member).is_dir() else [root / member]
                for file in files:
                    archive.write(file, file.relative_to(root).as_posix())
        zips.append(out / name)
    return zips


def test_official_zips_pack_like_the_folder(coco_root: Path, coco_shards: Path, tmp_path: Path) -> None:
    zips = _official_zips(coco_root, tmp_path)
    out = tmp_path / "from-zips"
    assert main(_pack_args(out, *zips)) == 0
    assert not (tmp_path / "train2014").exists()  # read in place, nothing extracted
    folder, zipped = load_manifest(coco_shards), load_manifest(out)
    assert zipped["sha256"] == folder["sha256"]  # the same shard bytes
    for name in folder["sha256"]:
        assert (out / name).read_bytes() == (coco_shards / name).read_bytes()
    assert zipped["source"] == [str(z.resolve()) for z in zips]
    assert zipped["splits"]["train"]["sources"][0]["source"] == str(zips[3].resolve())


# --- bad input: refused naming the id and why (nothing written), or dropped and listed with --skip-bad

def _json(root: Path, tree: str) -> tuple[Path, dict]:
    path = root / "annotations" / f"instances_{tree}.json"
    return path, json.loads(path.read_text())


def _first(root: Path, tree: str = "train2014") -> str:
    return sorted((root / tree).glob("*.jpg"))[0].stem


def _undefined_category(root: Path) -> tuple[str, str]:
    path, data = _json(root, "train2014")
    ann = data["annotations"][0]
    ann["category_id"] = 2  # a gap in the ids: no such category
    path.write_text(json.dumps(data))
    image = next(im for im in data["images"] if im["id"] == ann["image_id"])
    return Path(image["file_name"]).stem, "category_id 2, which 'categories' of annotations/instances_train2014.json"


def _missing_image(root: Path) -> tuple[str, str]:
    stem = _first(root)
    (root / "train2014" / f"{stem}.jpg").unlink()
    return stem, f"no image train2014/{stem}.jpg"


def _broken_image(root: Path) -> tuple[str, str]:
    stem = _first(root, "val2014")
    file = root / "val2014" / f"{stem}.jpg"
    file.write_bytes(file.read_bytes()[:300])
    return stem, "does not decode"


def _listed_twice(root: Path) -> tuple[str, str]:
    path, data = _json(root, "val2014")
    data["images"].append(dict(data["images"][1], id=999999999))
    path.write_text(json.dumps(data))
    return Path(data["images"][1]["file_name"]).stem, "listed twice in annotations/instances_val2014.json"


BAD = {"undefined-category": _undefined_category, "missing-image": _missing_image,
       "broken-image": _broken_image, "listed-twice": _listed_twice}


@pytest.fixture
def bad_root(coco_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root, ignore=shutil.ignore_patterns("test2014", "image_info_test2014.json"))
    return root


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_by_id_or_skipped_and_listed(bad_root: Path, tmp_path: Path, case: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    bad_id, reason = BAD[case](bad_root)
    out = tmp_path / "shards"
    assert main(_pack_args(out, bad_root)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert bad_id in err and reason in err and "nothing was written" in err
    assert not out.exists()
    assert main(_pack_args(out, bad_root) + ["--skip-bad"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    skipped = load_manifest(out)["skipped"]
    assert [s["id"] for s in skipped] == [bad_id] and reason in skipped[0]["reason"]
    assert "skipped" in err and bad_id in err and "dropped by --skip-bad" in err


def test_different_categories_in_the_two_files_are_refused(bad_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    path, data = _json(bad_root, "val2014")
    data["categories"][0]["name"] = "paper kite"
    path.write_text(json.dumps(data))
    assert main(_pack_args(tmp_path / "shards", bad_root)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "instances_train2014.json and annotations/instances_val2014.json define different categories" in err
    assert "paper kite" in err and not (tmp_path / "shards").exists()


def test_missing_pieces_and_mixed_kinds_are_named(bad_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (bad_root / "annotations" / "instances_val2014.json").unlink()
    assert main(_pack_args(tmp_path / "a", bad_root)) == 2
    assert "no annotations/instances_val2014.json" in capsys.readouterr().err
    shutil.rmtree(bad_root / "train2014")
    assert main(_pack_args(tmp_path / "b", bad_root)) == 2
    assert "no train2014/ images" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one kind of source per pack
        main(["--coco", str(bad_root), "--voc", str(bad_root), "--out", str(tmp_path / "c")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_plan_api_packs_like_the_command(coco_root: Path, coco_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "api"
    manifest = pack_from(lambda: coco_plan([coco_root]), out, PackOptions(PER_SHARD, 64), Console(quiet=True))
    assert manifest["sha256"] == load_manifest(coco_shards)["sha256"]


def test_a_file_that_is_not_a_zip_and_stray_annotations_are_named(bad_root: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    not_zip = tmp_path / "train2014.zip"
    not_zip.write_text("not a zip")
    assert main(_pack_args(tmp_path / "a", not_zip)) == 2
    assert "a file but not a zip archive" in " ".join(capsys.readouterr().err.split())
    path, data = _json(bad_root, "train2014")
    data["annotations"][0]["image_id"] = 424242424
    path.write_text(json.dumps(data))
    assert main(_pack_args(tmp_path / "b", bad_root)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "1 annotation(s) name an image_id that 'images' does not list" in err and not (tmp_path / "b").exists()
