"""Drawing for `shards.synth`: photographic backgrounds and the object classes.

Each class is a fixed (shape, hue, brightness, texture) combination. Two classes share
each shape and two share each hue, so a model must combine cues; sizes, aspect, rotation,
colour jitter, occlusion and border cuts vary per instance. Objects stay large (20-60% of
the short side) so that a class stays recognizable after RandomResizedCrop and
downscaling to ~128-227 px; the `difficult` ones are small and faded, like VOC's.

Any class list gets appearances the same way (`appearances`): class i of any list looks like
VOC's class i, so VOC's images never change and a made-up COCO or CSV set is as learnable.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shards.annotations import VocObject
from shards.classes import VOC_CLASSES

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "ring", "ellipse", "house")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "dots")


@dataclass(frozen=True)
class Appearance:
    shape: str
    colour: tuple[int, int, int]
    texture: str


def _appearance(c: int) -> Appearance:
    # Classes c and c+10 share a shape; their hues are opposite. Each hue is shared by one
    # bright class (c < 10) and one dark class with another shape. Past 20 classes the pattern
    # repeats with hues shifted by half a step, so no two classes look alike.
    hue = (((c % 10) + (c % 20 // 10) * 5) % 10 + 0.5 * (c // 20 % 2)) / 10
    sat, val = (0.9, 0.95) if c % 20 < 10 else (0.65, 0.55)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return Appearance(SHAPES[c % 10], (int(r * 255), int(g * 255), int(b * 255)), TEXTURES[(c // 2 + c) % 5])


def appearances(names: Sequence[str]) -> dict[str, Appearance]:
    """name -> how its objects look, for a class list in score order."""
    return {name: _appearance(c) for c, name in enumerate(names)}


VOC_LOOKS = appearances(VOC_CLASSES)


class Backgrounds:
    """Textured backgrounds: crops of real photos, or procedural noise without photos."""

    def __init__(self, photos: list[np.ndarray]) -> None:
        self.photos = photos
        # Mild sensor noise, drawn once (fixed seed) and cut at random offsets: a fresh
        # gaussian per image would cost more than everything else in the image.
        self._grain = np.random.default_rng(0).normal(0.0, 6.0, (512, 512, 3)).astype(np.int16)

    @classmethod
    def load(cls, folder: Path | None) -> "Backgrounds":
        paths = sorted(folder.glob("*.jpg")) if folder is not None else []
        return cls([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    def sample(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A writable uint8 [height, width, 3] background."""
        if self.photos:
            image = self._photo_crop(rng, width, height)
        else:
            image = self._noise(rng, width, height)
        # Per-channel gain so the few source photos do not repeat the same colours; the
        # grain keeps file sizes photographic after the crop is upscaled.
        gain = (rng.uniform(0.75, 1.25, size=3) * 256).astype(np.int32)
        gy, gx = int(rng.integers(0, 512 - height + 1)), int(rng.integers(0, 512 - width + 1))
        out = (image.astype(np.int32) * gain >> 8) + self._grain[gy:gy + height, gx:gx + width]
        return np.clip(out, 0, 255).astype(np.uint8)

    def _photo_crop(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        ph, pw = photo.shape[:2]
        scale = min(pw / width, ph / height) * rng.uniform(0.45, 1.0)
        cw, ch = max(8, int(width * scale)), max(8, int(height * scale))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(crop)

    @staticmethod
    def _noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        # Fractal value noise: octaves of upsampled random colour grids.
        total = np.zeros((height, width, 3), np.float32)
        for octave, weight in ((4, 0.4), (16, 0.3), (64, 0.2), (256, 0.1)):
            grid = (rng.random((max(2, octave * height // width), octave, 3)) * 255).astype(np.uint8)
            total += weight * np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
        return total.astype(np.uint8)


def _polygon(shape: str) -> list[tuple[float, float]]:
    """Vertices in [-1, 1]^2 for the polygon shapes."""
    if shape == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "triangle":
        return [(0, -1), (1, 1), (-1, 1)]
    if shape == "diamond":
        return [(0, -1), (1, 0), (0, 1), (-1, 0)]
    if shape == "house":
        return [(0, -1), (1, -0.2), (1, 1), (-1, 1), (-1, -0.2)]
    if shape in ("hexagon", "star"):
        n = 6 if shape == "hexagon" else 10
        radii = [1.0] * n if shape == "hexagon" else [1.0, 0.45] * 5
        angles = np.arange(n) * 2 * np.pi / n - np.pi / 2
        return [(r * np.cos(a), r * np.sin(a)) for r, a in zip(radii, angles)]
    if shape == "cross":
        a = 0.33
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
                (-1, a), (-1, -a), (-a, -a)]
    raise ValueError(shape)


def _mask(shape: str, w: int, h: int, angle: float) -> np.ndarray:
    """Boolean [h, w] mask of `shape` filling a w x h box, rotated by `angle` radians."""
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    if shape in ("circle", "ellipse"):
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
        draw.ellipse((w * 0.3, h * 0.3, w * 0.7 - 1, h * 0.7 - 1), fill=0)
    else:
        cos, sin = np.cos(angle), np.sin(angle)
        # Shrink rotated polygons a little so their corners stay inside the box.
        k = 1.0 / (abs(cos) + abs(sin))
        points = [((x * cos - y * sin) * k * (w - 1) / 2 + (w - 1) / 2,
                   (x * sin + y * cos) * k * (h - 1) / 2 + (h - 1) / 2) for x, y in _polygon(shape)]
        draw.polygon(points, fill=255)
    return np.asarray(image) > 0


def _texture(look: Appearance, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [h, w, 3] fill: the class colour (jittered per instance) and its pattern."""
    base = np.clip(np.array(look.colour) * rng.uniform(0.85, 1.15) + rng.normal(0, 10, 3), 0, 255)
    dark = base * 0.45
    period = max(4, min(w, h) // 5)  # ~5 bands across the object, whatever its size
    yy, xx = np.mgrid[0:h, 0:w]
    if look.texture == "solid":
        second = np.zeros((h, w), bool)
    elif look.texture == "hstripes":
        second = (yy // (period // 2)) % 2 == 1
    elif look.texture == "vstripes":
        second = (xx // (period // 2)) % 2 == 1
    elif look.texture == "checker":
        second = ((yy // (period // 2)) + (xx // (period // 2))) % 2 == 1
    else:  # dots on a period grid
        second = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 4) ** 2
    return np.where(second[..., None], dark, base).astype(np.uint8)


@dataclass(frozen=True)
class _Placement:
    name: str
    difficult: bool
    x0: int  # top-left corner; may lie outside the image (the object is then truncated)
    y0: int
    w: int
    h: int
    angle: float  # radians, for the polygon shapes


def _place(name: str, width: int, height: int, max_frac: float, rng: np.random.Generator,
           looks: Mapping[str, Appearance]) -> _Placement:
    short = min(width, height)
    difficult = rng.random() < 0.08
    frac = rng.uniform(0.08, 0.15) if difficult else rng.uniform(0.25, max_frac)
    aspect = rng.uniform(0.75, 1.33)
    if looks[name].shape == "ellipse":
        aspect = rng.uniform(1.6, 2.2)  # wide ellipse: tells it from the circle
    w, h = int(short * frac * np.sqrt(aspect)), int(short * frac / np.sqrt(aspect))
    cut = rng.random() < 0.15  # allowed to hang over the border (truncated)
    lo_x, hi_x = (-w // 3, width - 2 * w // 3) if cut else (0, width - w)
    lo_y, hi_y = (-h // 3, height - 2 * h // 3) if cut else (0, height - h)
    x0, y0 = int(rng.integers(lo_x, max(lo_x, hi_x) + 1)), int(rng.integers(lo_y, max(lo_y, hi_y) + 1))
    return _Placement(name, difficult, x0, y0, w, h, float(rng.uniform(-0.5, 0.5)))


def draw_objects(canvas: np.ndarray, names: list[str], rng: np.random.Generator,
                 looks: Mapping[str, Appearance] = VOC_LOOKS) -> list[VocObject]:
    """Paint objects of classes `names` onto `canvas` (in place); returns their annotations
    (`looks`: how each class is drawn, VOC's by default).

    Large objects are painted first so smaller ones sit in front, as in a photo; one that
    ends up mostly hidden is flagged difficult, one fully hidden is dropped.
    """
    height, width = canvas.shape[:2]
    max_frac = 0.6 if len(names) <= 2 else 0.5 if len(names) <= 4 else 0.4  # crowded images, smaller objects
    plans = sorted((_place(name, width, height, max_frac, rng, looks) for name in names), key=lambda p: -p.w * p.h)

    owner = np.full((height, width), -1, np.int16)  # which object each pixel shows, for occlusion
    drawn: list[tuple[int, VocObject, int]] = []
    for k, p in enumerate(plans):
        look = looks[p.name]
        mask = _mask(look.shape, p.w, p.h, p.angle if look.shape not in ("circle", "ellipse", "ring") else 0.0)
        tex = _texture(look, p.w, p.h, rng)
        # Clip the object box to the image.
        cx0, cy0 = max(p.x0, 0), max(p.y0, 0)
        cx1, cy1 = min(p.x0 + p.w, width), min(p.y0 + p.h, height)
        m = mask[cy0 - p.y0:cy1 - p.y0, cx0 - p.x0:cx1 - p.x0]
        if not m.any():
            continue
        region = canvas[cy0:cy1, cx0:cx1]
        t = tex[cy0 - p.y0:cy1 - p.y0, cx0 - p.x0:cx1 - p.x0].astype(np.float32)
        alpha = 0.55 if p.difficult else 1.0  # difficult ones are also faded into the scene
        region[m] = (alpha * t[m] + (1 - alpha) * region[m]).astype(np.uint8)
        owner[cy0:cy1, cx0:cx1][m] = k
        ys, xs = np.nonzero(m)
        bbox = (cx0 + int(xs.min()) + 1, cy0 + int(ys.min()) + 1, cx0 + int(xs.max()) + 1, cy0 + int(ys.max()) + 1)
        truncated = int(m.sum()) < int(mask.sum())
        drawn.append((k, VocObject(p.name, p.difficult, truncated, bbox), int(m.sum())))

    objects = []
    for k, obj, area in drawn:
        visible = int((owner == k).sum())
        if visible == 0:
            continue
        if visible < 0.3 * area:  # mostly hidden behind others: hard to tell, like VOC's difficult
            obj = VocObject(obj.name, True, obj.truncated, obj.bbox)
        objects.append(obj)
    return objects
