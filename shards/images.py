"""Image policy of the shards: always RGB JPEG, by default stored with a smaller short side.

Decoding is the main cost of training on VOC-size photos, and a smaller stored image is
the main lever (docs/NOTES.md): with the short side at 256 a 500x375 photo decodes ~3x faster
and the RandomResizedCrop(227) / Resize(227) views lose nothing they would keep.

EXIF orientation (a phone photo stored sideways with a tag saying how to turn it): the stored
pixels, the json's width/height and the boxes must be in one frame, and the boxes are in the
frame the annotator saw. The XML's <size> says which: `choose_frame` turns the image upright
(the tag applied, as viewers show it) when <size> is the upright frame, keeps the stored pixels
when <size> is theirs, and refuses the image (a bad sample, named by id) when <size> fits both
(a 180-degree turn or a mirror, or a square image) or neither: then nobody can tell where its
boxes lie. An image without annotation (labels hidden) is turned upright. Either way the tag is
not copied into the shards, so no reader can turn the stored pixels a second time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_SIZE = 256  # stored shorter side, pixels
DEFAULT_QUALITY = 90  # JPEG quality of re-encoded images (VOC's own are ~90-95)
ORIENTATION = 0x0112  # the EXIF tag; 1 = upright, 2-8 = mirrored and/or turned
_TURNS = {2: "mirrored", 3: "turned 180 degrees", 4: "mirrored upside down", 5: "mirrored and turned",
          6: "turned 90 degrees", 7: "mirrored and turned", 8: "turned 270 degrees"}


class ImageError(ValueError):
    """An image that cannot be decoded completely."""


@dataclass(frozen=True)
class StoredImage:
    jpeg: bytes
    width: int  # original size (upright when the EXIF orientation was applied), as in the annotation
    height: int
    stored_width: int
    stored_height: int


_BROKEN = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


def orientation(data: bytes) -> tuple[int, tuple[int, int]]:
    """(EXIF orientation, 1 when absent or invalid; (width, height) of the stored pixels), from the header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            tag = image.getexif().get(ORIENTATION, 1)
            return (tag if tag in _TURNS else 1), image.size
    except _BROKEN as err:
        raise ImageError(f"image does not decode ({err})") from None


def choose_frame(tag: int, stored: tuple[int, int], annotated: tuple[int, int] | None) -> bool:
    """Whether to apply EXIF orientation `tag` to pixels of size `stored`, given the XML's <size>
    (`annotated`; None without annotation); ImageError when the XML cannot say (module docstring)."""
    if tag == 1:
        return False
    if annotated is None:
        return True
    upright = stored[::-1] if tag >= 5 else stored
    if annotated == upright != stored:
        return True
    if annotated == stored != upright:
        return False
    fits = "both the stored and the upright frame" if annotated == stored else "neither the stored nor the upright frame"
    raise ImageError(f"EXIF orientation {tag} ({_TURNS[tag]}): the XML's <size> {annotated[0]}x{annotated[1]} fits "
                     f"{fits} ({stored[0]}x{stored[1]} stored), so where its boxes lie is unknown; store the image "
                     f"upright without the tag (boxes to match), or --skip-bad")


def prepare_image(data: bytes, max_size: int | None = DEFAULT_MAX_SIZE,
                  quality: int = DEFAULT_QUALITY, upright: bool = False) -> StoredImage:
    """Decode `data` fully (so truncated files fail here, not in training), make it RGB,
    turn it upright by its EXIF orientation when `upright` (choose_frame decides), shrink its
    shorter side to `max_size` (None keeps the size) and encode it as JPEG.

    An upright RGB JPEG without an orientation tag that needs no resizing keeps its original bytes.
    """
    try:
        image = Image.open(io.BytesIO(data))
        tagged = image.getexif().get(ORIENTATION, 1) in _TURNS
        width, height = image.size
        target = _target_size(width, height, max_size)
        if target != (width, height) and not upright:
            # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, never below target.
            image.draft(None, target)
        image.load()
        if upright:  # rare (phone photos): decoded at full size, then turned
            image = ImageOps.exif_transpose(image)
            width, height = image.size
            target = _target_size(width, height, max_size)
    except _BROKEN as err:
        raise ImageError(f"image does not decode ({err})") from None
    if target == (width, height) and image.format == "JPEG" and image.mode == "RGB" and not tagged:
        return StoredImage(data, width, height, width, height)
    # Grayscale, CMYK, palette and alpha images all become plain RGB.
    rgb = image.convert("RGB")
    if rgb.size != target:
        rgb = rgb.resize(target, Image.BICUBIC)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return StoredImage(out.getvalue(), width, height, *target)


def _target_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    short = min(width, height)
    if max_size is None or short <= max_size:
        return width, height
    scale = max_size / short
    # The short side lands exactly on max_size; the long one is rounded.
    return (max_size, max(1, round(height * scale))) if width == short else \
        (max(1, round(width * scale)), max_size)

