"""A VOC-format data set of our own: `python -m shards.synth --out DIR [--year 2012]`.

Nothing on these machines can download VOC, so the demo, the tests and the loader
benchmark run on this: a real VOCdevkit tree (JPEGImages, Annotations in the VOC XML
schema, ImageSets/Main incl. `<class>_<split>.txt`) that torchvision's VOCDetection and
our packer read exactly like the official one.

Each class is a fixed (shape, colour, texture) triple (see `shards/synth_drawing.py`);
classes share a hue or a shape with one other class, so neither cue alone is enough.
Images are VOC-sized JPEGs over backgrounds cut from real VOC photos, so decode cost and
file sizes resemble VOC. Every image is drawn from its own RNG seeded by (seed, index):
the same seed gives the same bytes.

`--year Y` writes OUT/VOC<Y> instead of OUT/VOC2007, with that release's id style
(VOC2007: `000001`; later years: `2008_000001`, as VOC2008-2012 name theirs) and its name in
the XML: a VOCdevkit holding VOC2007 and VOC2012 side by side is two runs into one OUT.
The images depend on --seed and the index only: give each year its own seed.

`--format coco` and `--format csv` write a COCO 2014-format set or photos with a labels CSV
instead (shards.synth_coco, shards.synth_csv; their own options: `--format coco --help`).

`--hide-test-labels` makes the test split the way a challenge or a course hands it out
(VOC2012 test, a Kaggle test set): its JPEGs and ImageSets/Main/test.txt, but no Annotations
and no `<class>_test.txt`. The images are the same bytes as without the flag.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import sys
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from shards.annotations import VocObject, devkit_states
from shards.classes import VOC_CLASSES
from shards.synth_drawing import Backgrounds, draw_objects

# VOC07 image frequencies per class (trainval, fraction of images), scaled a little so that
# after forcing at least one object per image person lands near 40% as in VOC.
_CLASS_FREQUENCY = {
    "aeroplane": 0.047, "bicycle": 0.048, "bird": 0.065, "boat": 0.036, "bottle": 0.049,
    "bus": 0.034, "car": 0.155, "cat": 0.067, "chair": 0.089, "cow": 0.026,
    "diningtable": 0.043, "dog": 0.082, "horse": 0.057, "motorbike": 0.046, "person": 0.40,
    "pottedplant": 0.049, "sheep": 0.019, "sofa": 0.073, "train": 0.052, "tvmonitor": 0.052,
}
FULL_SIZES = {"train": 2501, "val": 2510, "test": 4952}  # VOC07's real split sizes
YEARS = tuple(range(2007, 2013))  # the releases with a classification task in VOC's format
DEFAULT_SIZES = {"train": 500, "val": 200, "test": 301}  # a CPU demo; odd test count on purpose
# Real VOC photos shipped with the package, so every clone makes the same bytes.
DEFAULT_BACKGROUNDS = Path(__file__).resolve().parent / "backgrounds"
JPEG_QUALITY = (90, 96)  # VOC's JPEGs are quality ~90-95; drawn per image from this range


@dataclass(frozen=True)
class SynthImage:
    id: str
    split: str
    width: int
    height: int
    objects: list[VocObject]
    jpeg: bytes


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) distributed like VOC: mostly 500x375 landscape, some portrait."""
    u = rng.random()
    if u < 0.6:
        return 500, 375
    if u < 0.8:
        return 375, 500
    short = int(rng.integers(300, 500))
    return (500, short) if u < 0.92 else (short, 500)


def _choose_classes(rng: np.random.Generator) -> list[str]:
    """Classes of one image's objects (1-6 objects), with VOC-like skewed frequencies."""
    probs = np.array([_CLASS_FREQUENCY[c] for c in VOC_CLASSES])
    present = [c for c, p in zip(VOC_CLASSES, probs) if rng.random() < p]
    if not present:  # every VOC image has at least one object
        present = [VOC_CLASSES[int(rng.choice(len(VOC_CLASSES), p=probs / probs.sum()))]]
    present = present[:6]
    names = list(present)
    # Extra instances of the classes present (VOC images often hold several people/cars).
    while len(names) < 6 and rng.random() < 0.3:
        names.append(present[int(rng.integers(len(present)))])
    return names


def make_image(seed: int, index: int, image_id: str, split: str, backgrounds: Backgrounds) -> SynthImage:
    """Draw one image and its annotation; a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index])
    width, height = _image_size(rng)
    canvas = backgrounds.sample(rng, width, height)
    objects = draw_objects(canvas, _choose_classes(rng), rng)
    buffer = io.BytesIO()
    quality = int(rng.integers(*JPEG_QUALITY))
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=quality)
    return SynthImage(image_id, split, width, height, objects, buffer.getvalue())


def annotation_xml(image: SynthImage, year: int = 2007) -> bytes:
    """The VOC<year> XML for one image (same element order and layout as the official files)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{year}"
    ET.SubElement(root, "filename").text = f"{image.id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = f"The VOC{year} Database"
    ET.SubElement(source, "annotation").text = f"PASCAL VOC{year}"
    ET.SubElement(source, "image").text = "synthetic (shards.synth)"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in image.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(obj.truncated))
        ET.SubElement(node, "difficult").text = str(int(obj.difficult))
        box = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def voc_id(index: int, year: int = 2007) -> str:
    """The id of image `index` in VOC<year>'s style: 000001 (2007), 2008_000001 (2008 on)."""
    return f"{index + 1:06d}" if year == 2007 else f"2008_{index + 1:06d}"


def _assign_ids(sizes: dict[str, int], seed: int, year: int = 2007) -> list[tuple[str, str]]:
    """(id, split) for every image: VOC-style ids, splits interleaved like VOC's."""
    splits = np.repeat(list(sizes), list(sizes.values()))
    np.random.default_rng([seed, 2007]).shuffle(splits)
    return [(voc_id(i, year), str(split)) for i, split in enumerate(splits)]


def write_image_sets(voc: Path, images: Sequence[SynthImage], hidden: Collection[str] = ()) -> None:
    """ImageSets/Main: <split>.txt and <class>_<split>.txt (devkit format '%s %2d'); no class
    files for a list holding images of a `hidden` split (they would give its labels away)."""
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[SynthImage]] = {}
    for image in images:
        by_split.setdefault(image.split, []).append(image)
    if "train" in by_split and "val" in by_split:
        by_split["trainval"] = sorted(by_split["train"] + by_split["val"], key=lambda im: im.id)
    for split, members in by_split.items():
        members = sorted(members, key=lambda im: im.id)
        (main / f"{split}.txt").write_text("".join(f"{im.id}\n" for im in members))
        if any(im.split in hidden for im in members):  # trainval too, when train or val is hidden
            continue
        states = [devkit_states(im.objects) for im in members]
        for c, name in enumerate(VOC_CLASSES):
            lines = "".join(f"{im.id} {s[c]:2d}\n" for im, s in zip(members, states))
            (main / f"{name}_{split}.txt").write_text(lines)


FORMATS = ("voc", "coco", "csv")
_FORMAT = argparse.ArgumentParser(add_help=False)
_FORMAT.add_argument("--format", choices=FORMATS, default="voc")

_worker_backgrounds: Backgrounds | None = None  # each --jobs worker's own copy, loaded once


def _load_worker_backgrounds(folder: Path | None) -> None:
    global _worker_backgrounds
    _worker_backgrounds = Backgrounds.load(folder)


def _draw_in_worker(seed: int, job: tuple[int, str, str]) -> SynthImage:
    index, image_id, split = job
    assert _worker_backgrounds is not None
    return make_image(seed, index, image_id, split, _worker_backgrounds)


def generate(out: Path, sizes: dict[str, int], seed: int, backgrounds_dir: Path | None,
             hidden: Collection[str] = (), jobs: int = 1, year: int = 2007) -> Path:
    """Write OUT/VOC<year> (OUT plays the role of a VOCdevkit folder); returns that path.

    Splits in `hidden` get images and their <split>.txt only: labels hidden, as in a test set
    handed out without annotations. `jobs` > 1 draws in that many processes: each image is a
    pure function of (seed, index), so the bytes are the same for any `jobs`.
    """
    unknown = sorted(set(hidden) - set(sizes))
    if unknown:
        raise ValueError(f"hidden splits {unknown} are not among the splits made: {sorted(sizes)}")
    if year not in YEARS:
        raise ValueError(f"year {year}: VOC's classification releases are {YEARS[0]}-{YEARS[-1]}")
    voc = out / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    assigned = [(index, image_id, split) for index, (image_id, split) in enumerate(_assign_ids(sizes, seed, year))]
    images: list[SynthImage] = []
    with Progress(console=Console(stderr=True), transient=True) as progress, ExitStack() as stack:
        task = progress.add_task("drawing images", total=len(assigned))
        if jobs > 1:  # imap keeps the order; chunks amortize the pickling of the jobs
            pool = stack.enter_context(multiprocessing.Pool(jobs, _load_worker_backgrounds, (backgrounds_dir,)))
            drawn = pool.imap(partial(_draw_in_worker, seed), assigned, chunksize=8)
        else:
            backgrounds = Backgrounds.load(backgrounds_dir)
            drawn = (make_image(seed, *job, backgrounds) for job in assigned)
        for image in drawn:
            image_id, split = image.id, image.split
            (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(image.jpeg)
            if split not in hidden:
                (voc / "Annotations" / f"{image_id}.xml").write_bytes(annotation_xml(image, year))
            # Keep only what ImageSets needs; the JPEG bytes are on disk already.
            images.append(SynthImage(image.id, split, image.width, image.height, image.objects, b""))
            progress.advance(task)
    write_image_sets(voc, images, hidden)
    return voc


def main(argv: Sequence[str] | None = None) -> int:
    chosen, _ = _FORMAT.parse_known_args(argv)
    if chosen.format != "voc":
        from shards.synth_formats import main_coco, main_csv  # only what the chosen format needs
        return (main_coco if chosen.format == "coco" else main_csv)(argv)
    parser = argparse.ArgumentParser(prog="python -m shards.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=FORMATS, default="voc",
                        help="voc (default): a VOCdevkit; coco: COCO 2014's layout; csv: images + labels.csv")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="VOCdevkit folder to write (DIR/VOC<year>/...)")
    parser.add_argument("--year", type=int, default=2007, choices=YEARS, metavar="YEAR",
                        help="the VOC release to imitate: folder VOC<YEAR>, its id style (default 2007)")
    for split, n in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=n, metavar="N", help=f"{split} images (default {n})")
    parser.add_argument("--full", action="store_true", help="VOC07's real sizes: 2501/2510/4952")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="draw in N processes (the same bytes for any N; default 1)")
    parser.add_argument("--hide-test-labels", action="store_true",
                        help="write the test split without Annotations and <class>_test.txt, as a "
                             "challenge test set comes (shards.pack then packs it unlabeled)")
    parser.add_argument("--backgrounds", type=Path, default=DEFAULT_BACKGROUNDS, metavar="DIR",
                        help="folder of real photos (*.jpg) to cut backgrounds from; "
                             "procedural texture when it does not exist")
    args = parser.parse_args(argv)
    sizes = dict(FULL_SIZES) if args.full else {s: getattr(args, s) for s in DEFAULT_SIZES}
    bad = [f"--{s} {n}" for s, n in sizes.items() if n < 0]
    if bad:
        parser.error(f"split sizes must be >= 0, got {', '.join(bad)}")
    console = Console(stderr=True)
    if not args.backgrounds.is_dir():
        console.print(f"[yellow]no background photos at {args.backgrounds}: using procedural texture")
    made = {s: n for s, n in sizes.items() if n > 0}
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more processes")
    if args.hide_test_labels and "test" not in made:
        parser.error("--hide-test-labels needs test images; drop it or give --test N with N > 0")
    hidden = ("test",) if args.hide_test_labels else ()
    voc = generate(args.out, made, args.seed, args.backgrounds if args.backgrounds.is_dir() else None, hidden,
                   jobs=args.jobs, year=args.year)
    console.print(f"wrote {sum(sizes.values())} images to {voc} "
                  f"({', '.join(f'{s} {n}' for s, n in sizes.items())}, seed {args.seed})"
                  + ("; test labels hidden: no Annotations, no <class>_test.txt" if hidden else ""), soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
