"""Made-up photos of any class list, for the COCO-format and CSV-format sets of shards.synth.

The objects are drawn by shards.synth_drawing with the class list's own appearances, so a model
can learn them as it learns the VOC-format set. Each image is a pure function of (seed, stream,
index): the same arguments give the same bytes, in any process.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shards.annotations import VocObject
from shards.synth_drawing import Appearance, Backgrounds, draw_objects

# COCO's common shapes (640x480, 480x640, 640x427) at VOC's scale: Backgrounds cut at most 512 px.
SHAPES = ((500, 375), (375, 500), (500, 333))
MAX_SIDE = 500
EMPTY_FRACTION = 0.08  # images with no object at all (COCO has ~1%; more here so small sets hold some)


@dataclass(frozen=True)
class Photo:
    jpeg: bytes
    width: int
    height: int
    objects: list[VocObject]  # empty for an image with nothing in it


def _choose(names: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """1-4 objects; class i is present with a probability falling from 0.35 to 0.1 down the list."""
    probs = np.linspace(0.35, 0.1, len(names))
    present = [n for n, p in zip(names, probs) if rng.random() < p][:4]
    return present or [names[int(rng.integers(len(names)))]]


def draw_photo(seed: int, stream: int, index: int, looks: dict[str, Appearance], backgrounds: Backgrounds,
               max_side: int = MAX_SIDE, quality: int = 90) -> Photo:
    """One image of classes `looks` (name -> appearance, in score order); `stream` keeps the images of
    different folders (train2014, val2014, ...) apart."""
    rng = np.random.default_rng([seed, stream, index])
    base_w, base_h = SHAPES[int(rng.integers(len(SHAPES)))]
    scale = min(1.0, max_side / max(base_w, base_h))
    width, height = max(32, round(base_w * scale)), max(32, round(base_h * scale))
    canvas = backgrounds.sample(rng, width, height)
    objects = [] if rng.random() < EMPTY_FRACTION else draw_objects(canvas, _choose(tuple(looks), rng), rng, looks)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=quality)
    return Photo(buffer.getvalue(), width, height, objects)
