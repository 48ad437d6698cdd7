"""The train-time views of shards.presets computed for a whole batch at once, on the device.

The device loader (shards.resident, trainer.device_data) keeps a split's decoded images in
one flat uint8 tensor on the training device, each image at its own size. Here a batch of
them becomes a uint8 [B, 3, S, S] batch without a per-image Python step:

- `crop_boxes` draws RandomResizedCrop boxes with torchvision's distribution (scale
  (0.08, 1), log-uniform ratio in (3/4, 4/3), 10 tries, then its centre-crop fallback),
  all tries of all images in a few tensor ops;
- `resized_crops` cuts each box out and resizes it to S x S by bilinear interpolation,
  computed as four gathers from the flat tensor (torch's align_corners=False rule, inside
  the box as torchvision's resized_crop does). Unlike torchvision's antialiased resize,
  no low-pass filter runs first: boxes larger than S (at most ~1.5x at a stored short side
  of 256 and S = 227) alias slightly. `crops` uses it on GPUs and torchvision's per-image
  kernel on CPU, where that is far faster;
- `random_flips` mirrors a random half of a batch.

Randomness comes from a torch.Generator the caller seeds, so a batch's view is a function
of that seed alone (what a mid-epoch resume needs).
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as F

SCALE = (0.08, 1.0)  # torchvision.transforms.v2.RandomResizedCrop defaults
RATIO = (3 / 4, 4 / 3)
TRIES = 10


def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, height, width), int64 [B, 4], for images of the given sizes.

    Per image: up to TRIES (area, log-ratio) draws, the first whose box fits; else torchvision's
    fallback (the whole image, cut to the nearest allowed ratio, centred).
    """
    device = heights.device
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    shape = (len(heights), TRIES)
    area = h_img * w_img * torch.empty(shape, dtype=torch.float64, device=device).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(shape, dtype=torch.float64, device=device).uniform_(
        math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    found = fits.any(dim=1)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]

    # torchvision's fallback: too tall -> full width at the narrowest ratio, too wide -> full height at the widest.
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    in_ratio = w_img / h_img
    fallback_w = torch.where(in_ratio > RATIO[1], torch.round(h_img * RATIO[1]), w_img)
    fallback_h = torch.where(in_ratio < RATIO[0], torch.round(w_img / RATIO[0]), h_img)
    h, w = torch.where(found, h, fallback_h), torch.where(found, w, fallback_w)

    # A uniform integer offset, as torch.randint(0, H - h + 1) draws it; centred for the fallback.
    u = torch.rand((2, len(heights)), dtype=torch.float64, device=device, generator=generator)
    top = torch.where(found, torch.floor(u[0] * (h_img - h + 1)), torch.div(h_img - h, 2, rounding_mode="floor"))
    left = torch.where(found, torch.floor(u[1] * (w_img - w + 1)), torch.div(w_img - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).long()


def _source_rows(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `size` output rows of every box: (first source row, second, weight of the second).

    torch's bilinear rule with align_corners=False, inside the box: source = (i + 0.5) * length /
    size - 0.5, below 0 clamped to 0, the second row clamped to the box's last.
    """
    steps = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    src = (steps[None, :] * (length[:, None].float() / size) - 0.5).clamp(min=0)
    lo = src.floor().long()
    weight = src - lo
    lo = torch.minimum(lo, length[:, None] - 1)
    hi = torch.minimum(lo + 1, length[:, None] - 1)
    return start[:, None] + lo, start[:, None] + hi, weight


def resized_crops(pixels: torch.Tensor, offsets: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                  boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box of each image resized to size x size: uint8 [B, 3, size, size].

    pixels: flat uint8, image i's [3, H_i, W_i] stored from offsets[i]; offsets, heights,
    widths, boxes: the batch's rows (int64, on pixels' device); boxes as from crop_boxes.
    """
    top, left, h, w = boxes.unbind(1)
    y0, y1, wy = _source_rows(top, h, size)  # [B, S] each
    x0, x1, wx = _source_rows(left, w, size)
    plane = (heights * widths)[:, None, None, None]
    channel = torch.arange(3, device=pixels.device)[None, :, None, None] * plane  # [B, 3, 1, 1]
    base = offsets[:, None, None, None] + channel

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        index = base + (rows * widths[:, None])[:, None, :, None] + cols[:, None, None, :]
        return pixels[index].float()  # [B, 3, S, S]

    wy, wx = wy[:, None, :, None], wx[:, None, None, :]
    top_row = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom_row = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    out = top_row * (1 - wy) + bottom_row * wy
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crops(pixels: torch.Tensor, offsets: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
          boxes: torch.Tensor, size: int) -> torch.Tensor:
    """`resized_crops` where the batched gathers pay: on a GPU. On a CPU they are memory-bound
    (~20 ms per 227 px image on one core here) and torchvision's per-image uint8 kernel is ~30x
    faster (0.65 ms), so there each box goes through v2.functional.resized_crop (antialiased, as
    the streaming loader's RandomResizedCrop)."""
    if pixels.device.type != "cpu":
        return resized_crops(pixels, offsets, heights, widths, boxes, size)
    rows = zip(offsets.tolist(), heights.tolist(), widths.tolist(), boxes.tolist())
    return torch.stack([F.resized_crop(pixels[o:o + 3 * h * w].view(3, h, w), *box, [size, size], antialias=True)
                        for o, h, w, box in rows])


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch mirrored left-right with probability 1/2 (RandomHorizontalFlip(0.5))."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
