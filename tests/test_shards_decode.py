"""Images of every kind decode to RGB; corrupt samples are reported; the real VOC files parse."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image
from rich.console import Console

from shards.annotations import devkit_states, parse_annotation
from shards.classes import VOC
from shards.images import prepare_image
from shards.manifest import load_manifest, write_manifest
from shards.pack import PackOptions, pack
from shards.reader import CorruptSampleWarning, decode_rgb, decode_rgb_pil, eval_loader
from shards.synth import DEFAULT_BACKGROUNDS, generate

# Shipped with the repo, so these tests run (never skip) on every clone.
REAL_ANNOTATION = Path(__file__).parent / "fixtures" / "voc2007-real" / "000002.xml"
REAL_PHOTOS = sorted(DEFAULT_BACKGROUNDS.glob("*.jpg"))  # five real VOC2007 test photos


def _encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _samples(shards_dir: Path, split: str) -> dict[str, dict]:
    urls = [str(shards_dir / n) for n in load_manifest(shards_dir)["splits"][split]["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, nodesplitter=None)}


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, tuple[int, int]]]]:
    """A VOC tree whose images are grayscale, CMYK, palette (PNG bytes) and portrait, packed."""
    root = tmp_path_factory.mktemp("odd") / "VOCdevkit"
    generate(root, {"test": 4}, seed=5, backgrounds_dir=None)
    folder = root / "VOC2007" / "JPEGImages"
    ids = sorted(p.stem for p in folder.glob("*.jpg"))
    base = Image.open(folder / f"{ids[0]}.jpg").convert("RGB").resize((500, 375))
    variants = {"grayscale": (base.convert("L"), "JPEG"), "cmyk": (base.convert("CMYK"), "JPEG"),
                "palette": (base.convert("P"), "PNG"), "portrait": (base.transpose(Image.ROTATE_90), "JPEG")}
    kinds = {}
    for image_id, (kind, (image, fmt)) in zip(ids, variants.items()):
        (folder / f"{image_id}.jpg").write_bytes(_encode(image, fmt))
        kinds[image_id] = (kind, image.size)
    out = root.parent / "shards"
    pack([root], out, PackOptions(samples_per_shard=2), Console(quiet=True))
    return out, kinds


def test_grayscale_cmyk_palette_and_portrait_images_decode_as_rgb(odd_images) -> None:
    shards_dir, kinds = odd_images
    samples = _samples(shards_dir, "test")
    assert set(samples) == set(kinds)  # every kind of image made it into the shards
    for image_id, sample in samples.items():
        kind, (width, height) = kinds[image_id]
        record = json.loads(sample["json"])
        assert (record["width"], record["height"]) == (width, height)
        image = decode_rgb(sample["jpg"])
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        # Short side stored at 256, orientation kept: the portrait stays portrait.
        assert min(image.shape[1:]) == 256 and (image.shape[1] > image.shape[2]) == (height > width), kind
        if kind == "grayscale":
            assert (image.int().amax(0) - image.int().amin(0)).max() <= 8  # grey stays grey
        # The PIL fallback decodes the same picture.
        assert (decode_rgb_pil(sample["jpg"]).float() - image.float()).abs().mean() < 2


def test_odd_images_pass_through_the_eval_loader(odd_images) -> None:
    shards_dir, kinds = odd_images
    seen = []
    for rank in (0, 1):
        for images, _, ids in eval_loader(shards_dir, split="test", batch_size=3, rank=rank, world_size=2,
                                          num_workers=0, image_size=64):
            assert images.shape[1:] == (3, 64, 64)
            seen += ids
    assert sorted(seen) == sorted(kinds)


def test_corrupt_sample_at_read_time_is_reported_with_its_key(shards_dir: Path, tmp_path: Path) -> None:
    good = _samples(shards_dir, "val")
    keys = sorted(good)[:3]
    with wds.TarWriter(str(tmp_path / "val-00000.tar")) as writer:
        for key in keys:
            jpg = good[key]["jpg"] if key != keys[1] else good[key]["jpg"][:300]  # cut mid-image
            writer.write({"__key__": key, "jpg": jpg, "json": good[key]["json"]})
    manifest = load_manifest(shards_dir)
    manifest["splits"] = {"val": {**manifest["splits"]["val"], "shards": ["val-00000.tar"], "ids": keys}}
    write_manifest(tmp_path, manifest)
    with pytest.warns(CorruptSampleWarning, match=f"corrupt sample '{keys[1]}'.*1 corrupt so far"):
        batches = list(eval_loader(tmp_path, split="val", batch_size=8, rank=0, world_size=1, num_workers=0,
                                   image_size=32))
    assert [ids for _, _, ids in batches] == [[keys[0], keys[2]]]


def test_the_real_voc_annotation_parses() -> None:
    annotation = parse_annotation(REAL_ANNOTATION.read_bytes())
    assert (annotation.width, annotation.height) == (335, 500)
    [obj] = annotation.objects
    assert (obj.name, obj.difficult, obj.truncated, obj.bbox) == ("train", False, False, (139, 200, 207, 301))
    states = devkit_states(annotation.objects)
    assert states[VOC.index()["train"]] == 1 and states.count(-1) == 19


def test_the_real_voc_photos_ship_with_the_package() -> None:
    assert len(REAL_PHOTOS) == 5


@pytest.mark.parametrize("photo", REAL_PHOTOS, ids=lambda p: p.name)
def test_real_voc_photos_are_stored_with_short_side_256(photo: Path) -> None:
    stored = prepare_image(photo.read_bytes())
    assert (stored.width, stored.height) == (500, 375)
    assert (stored.stored_width, stored.stored_height) == (341, 256)
    assert decode_rgb(stored.jpeg).shape == (3, 256, 341)
