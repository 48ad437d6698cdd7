"""The train-time views of shards.presets computed for a whole batch at once, on the device.

The device loader (shards.resident, trainer.data.device) keeps a split's decoded images in
one padded uint8 tensor [N, 3, Hp, Wp] on the training device, each image top-left in its
slot at its own size (portrait ones transposed, so that the short sides line up and the
padding stays small). Here a batch of them becomes a uint8 [B, 3, S, S] batch without a
per-image Python step:

- `crop_boxes` draws RandomResizedCrop boxes with torchvision's distribution (scale
  (0.08, 1), log-uniform ratio in (3/4, 4/3), 10 tries, then its centre-crop fallback),
  all tries of all images in a few tensor ops;
- `resized_crop_flips` cuts each box out, resizes it to S x S by bilinear interpolation
  (torch's align_corners=False rule, inside the box as torchvision's resized_crop does) and
  mirrors the flipped ones, all in one grid_sample over the batch: a sampling grid per image
  reads each source pixel a few times, with no int64 index tensors. Unlike torchvision's
  antialiased resize, no low-pass filter runs first: boxes larger than S (at most ~1.5x at a
  stored short side of 256 and S = 227) alias slightly. `crop_flips` uses it on GPUs and
  torchvision's per-image kernel on CPU, where that is far faster;
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


def _source_coords(start: torch.Tensor, length: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [B, size]: the source coordinate of each output row (or column) of every box.

    torch's bilinear rule with align_corners=False, inside the box: (i + 0.5) * length / size - 0.5,
    clamped to [0, length - 1] (the box's edge pixel, as torchvision's resized_crop sees it);
    reversed where `flip` (a mirrored crop reads its columns right to left).
    """
    steps = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    length = length[:, None].float()
    src = (steps[None, :] * (length / size) - 0.5).clamp(min=0)
    src = torch.minimum(src, length - 1) + start[:, None].float()
    return src if flip is None else torch.where(flip[:, None], src.flip(1), src)


def resized_crop_flips(images: torch.Tensor, transposed: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
                       size: int) -> torch.Tensor:
    """Each box of each image resized to size x size and mirrored where `flips`, in one grid_sample:
    uint8 [B, 3, size, size].

    images: uint8 [B, 3, Hp, Wp], each image top-left in its padded slot and stored transposed
    (short side first) where `transposed`; boxes (top, left, height, width) in the image's own
    orientation, as from crop_boxes; flips: bool [B]. Bilinear without a low-pass filter first:
    boxes larger than size (at most ~1.5x at a stored short side of 256 and 227 px) alias slightly.
    """
    top, left, h, w = boxes.unbind(1)
    rows = _source_coords(top, h, size)[:, :, None].expand(-1, -1, size)  # [B, S, S]: output (i, j) -> image row
    cols = _source_coords(left, w, size, flips)[:, None, :].expand(-1, size, -1)
    t = transposed[:, None, None]
    stored_rows, stored_cols = torch.where(t, cols, rows), torch.where(t, rows, cols)
    height, width = images.shape[-2:]
    # grid_sample's normalized coordinates (align_corners=False): pixel x's centre is (x + 0.5) * 2 / W - 1.
    grid = torch.stack(((stored_cols + 0.5) * (2 / width) - 1, (stored_rows + 0.5) * (2 / height) - 1), dim=-1)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop_flips(images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, transposed: torch.Tensor,
               boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """`resized_crop_flips` where one batched op pays: on a GPU. On a CPU, torchvision's per-image
    uint8 kernel is far faster (~30x: 0.65 ms per 227 px image on one core here, where batched
    float sampling is memory-bound), so there each box goes through v2.functional.resized_crop
    (antialiased, as the streaming loader's RandomResizedCrop)."""
    if images.device.type != "cpu":
        return resized_crop_flips(images, transposed, boxes, flips, size)
    out = []
    for image, h, w, t, box in zip(images, heights.tolist(), widths.tolist(), transposed.tolist(), boxes.tolist()):
        stored = image[:, :w, :h].transpose(1, 2) if t else image[:, :h, :w]
        out.append(F.resized_crop(stored, *box, [size, size], antialias=True))
    batch = torch.stack(out)
    return torch.where(flips[:, None, None, None], batch.flip(-1), batch)


def draw_flips(count: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """bool [count]: which images RandomHorizontalFlip(0.5) mirrors."""
    return torch.rand(count, device=device, generator=generator) < 0.5


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch mirrored left-right with probability 1/2 (RandomHorizontalFlip(0.5))."""
    flip = draw_flips(len(images), images.device, generator)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
