"""Image policy of the shards: always RGB JPEG, by default stored with a smaller short side.

Decoding is the main cost of training on VOC-size photos, and a smaller stored image is
the main lever (docs/NOTES.md): with the short side at 256 a 500x375 photo decodes ~3x faster
and the RandomResizedCrop(227) / Resize(227) views lose nothing they would keep.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_SIZE = 256  # stored shorter side, pixels
DEFAULT_QUALITY = 90  # JPEG quality of re-encoded images (VOC's own are ~90-95)


class ImageError(ValueError):
    """An image that cannot be decoded completely."""


@dataclass(frozen=True)
class StoredImage:
    jpeg: bytes
    width: int  # original size, as in the annotation
    height: int
    stored_width: int
    stored_height: int


def prepare_image(data: bytes, max_size: int | None = DEFAULT_MAX_SIZE,
                  quality: int = DEFAULT_QUALITY) -> StoredImage:
    """Decode `data` fully (so truncated files fail here, not in training), make it RGB,
    shrink its shorter side to `max_size` (None keeps the size) and encode it as JPEG.

    An RGB JPEG that needs no resizing keeps its original bytes.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        target = _target_size(width, height, max_size)
        if target != (width, height):
            # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, never below target.
            image.draft(None, target)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageError(f"image does not decode ({err})") from None
    if target == (width, height) and image.format == "JPEG" and image.mode == "RGB":
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

