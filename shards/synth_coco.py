"""A COCO 2014-format data set of our own: `python -m shards.synth --format coco --out DIR`.

The official layout and file names (DIR/train2014/COCO_train2014_%012d.jpg, DIR/val2014/...,
DIR/annotations/instances_{train,val}2014.json with images, annotations and categories), so that
pycocotools and `shards.pack --coco` read it as they read COCO. Like COCO: category ids between 1
and 40 with gaps, names with spaces, image ids unique across folders; some images have no
annotation and some annotations are iscrowd=1. `--hide-test-labels` adds test2014/ and
annotations/image_info_test2014.json (images and categories, no annotations), as COCO's test set
comes. The same --seed gives the same bytes for any --jobs.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np

from shards.synth_drawing import Backgrounds, appearances
from shards.synth_photos import MAX_SIDE, Photo, draw_photo

# Names nothing else in this project uses, some with spaces; ids with gaps, as COCO's 1..90.
CATEGORIES = ((1, "paper lantern"), (3, "teapot"), (4, "snow globe"), (8, "cactus"), (11, "hot air balloon"),
              (15, "harmonica"), (19, "lighthouse"), (22, "traffic cone"), (27, "pinwheel"), (31, "accordion"),
              (36, "rubber duck"), (40, "anchor"))
DEFAULT_SIZES = {"train": 160, "val": 80, "test": 40}
FOLDERS = {"train": "train2014", "val": "val2014", "test": "test2014"}
CROWD_FRACTION = 0.1  # images whose first object is marked iscrowd=1
_INFO = {"description": "made-up COCO-format data (shards.synth)", "version": "1.0", "year": 2014}
_LICENSES = [{"id": 1, "name": "made up, no rights reserved", "url": ""}]

_worker_backgrounds: Backgrounds | None = None


def _load_worker_backgrounds(folder: Path | None) -> None:
    global _worker_backgrounds
    _worker_backgrounds = Backgrounds.load(folder)


def _draw(seed: int, stream: int, max_side: int, quality: int, index: int) -> Photo:
    assert _worker_backgrounds is not None
    looks = appearances([name for _, name in CATEGORIES])
    return draw_photo(seed, stream, index, looks, _worker_backgrounds, max_side, quality)


def image_ids(sizes: dict[str, int], seed: int) -> dict[str, list[int]]:
    """COCO-like image ids: unique across folders, irregular (COCO's run to ~581929), ascending per folder."""
    drawn = np.random.default_rng([seed, 2014]).choice(581929, size=sum(sizes.values()), replace=False) + 1
    ids, start = {}, 0
    for split, n in sizes.items():
        ids[split] = sorted(int(i) for i in drawn[start:start + n])
        start += n
    return ids


def _photos(split: str, n: int, seed: int, max_side: int, quality: int, jobs: int,
            backgrounds_dir: Path | None, stack: ExitStack) -> Iterator[Photo]:
    draw = partial(_draw, seed, list(FOLDERS).index(split), max_side, quality)
    if jobs > 1:  # imap keeps the order; each image is a pure function of its index
        pool = stack.enter_context(multiprocessing.Pool(jobs, _load_worker_backgrounds, (backgrounds_dir,)))
        return pool.imap(draw, range(n), chunksize=8)
    _load_worker_backgrounds(backgrounds_dir)
    return map(draw, range(n))


def _write_split(out: Path, split: str, ids: list[int], seed: int, options: dict, labeled: bool) -> dict:
    """Write one image folder; returns its json (images, annotations when `labeled`, categories)."""
    folder = out / FOLDERS[split]
    folder.mkdir(parents=True, exist_ok=True)
    index_of = {name: i for i, (_, name) in enumerate(CATEGORIES)}
    images, annotations = [], []
    crowd = np.random.default_rng([seed, 99, list(FOLDERS).index(split)]).random(len(ids)) < CROWD_FRACTION
    with ExitStack() as stack:
        for index, photo in enumerate(_photos(split, len(ids), seed, stack=stack, **options)):
            coco_id = ids[index]
            file_name = f"COCO_{FOLDERS[split]}_{coco_id:012d}.jpg"
            (folder / file_name).write_bytes(photo.jpeg)
            images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": photo.height,
                           "width": photo.width, "date_captured": "2014-01-01 00:00:00", "id": coco_id})
            for k, obj in enumerate(photo.objects):
                x0, y0, x1, y1 = obj.bbox  # VOC's 1-based inclusive corners -> COCO's [x, y, w, h]
                box = [float(x0 - 1), float(y0 - 1), float(x1 - x0 + 1), float(y1 - y0 + 1)]
                annotations.append({"segmentation": [], "area": box[2] * box[3],
                                    "iscrowd": int(crowd[index] and k == 0), "image_id": coco_id, "bbox": box,
                                    "category_id": CATEGORIES[index_of[obj.name]][0], "id": 1000 * coco_id + k})
    categories = [{"supercategory": "made up", "id": i, "name": name} for i, name in CATEGORIES]
    data = {"info": _INFO, "images": images, "licenses": _LICENSES, "categories": categories}
    if labeled:
        data["annotations"] = annotations
    return data


def generate_coco(out: Path, sizes: dict[str, int], seed: int = 0, backgrounds_dir: Path | None = None,
                  hide_test_labels: bool = False, max_side: int = MAX_SIDE, quality: int = 90,
                  jobs: int = 1) -> Path:
    """Write the COCO-format set into `out` (train2014 and val2014; test2014 too when
    `hide_test_labels`); returns `out`."""
    options = {"max_side": max_side, "quality": quality, "jobs": jobs, "backgrounds_dir": backgrounds_dir}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    made = {split: sizes[split] for split in ("train", "val") + (("test",) if hide_test_labels else ())}
    for split, ids in image_ids(made, seed).items():
        data = _write_split(out, split, ids, seed, options, labeled=split != "test")
        name = "image_info_test2014.json" if split == "test" else f"instances_{FOLDERS[split]}.json"
        (out / "annotations" / name).write_text(json.dumps(data))
    return out
