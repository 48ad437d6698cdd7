"""Splits decoded once into memory on the training device (GPU memory, or RAM on CPU).

VOC07 is small: all of it decoded at a stored short side of 256 is ~2.6 GB of uint8, which
fits on any training GPU. Held there, an epoch needs no JPEG decode and no per-image CPU
work (shards.device_views augments whole batches on the device). Two forms:

- `EvalView`: a split's evaluation view (Resize + CenterCrop), computed at load time by the
  streaming reader itself (shards.reader.eval_loader), so both loaders feed the model the
  same pixels: uint8 [N, 3, S, S].
- `RawImages`: a split's stored images, each at its own size top-left in a slot of one
  padded uint8 tensor [N, 3, Hp, Wp], portrait ones transposed (short side first: with
  VOC's shapes the padding costs ~25%); RandomResizedCrop needs them, and one grid_sample
  per batch cuts them (shards.device_views).

Rows are in sorted id order whatever order the reader's workers delivered them in, so the
same index means the same image on every process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from shards.decoded_cache import Decoded, entry_key, load_or_build
from shards.device_views import crop_boxes, crop_flips, draw_flips, random_flips
from shards.manifest import load_manifest, split_entry
from shards.presets import CROPPING
from shards.reader import eval_loader, sample_loader

# A padded slot of RawImages when the manifest gives no sizes: the long side of VOC's widest
# common shape (500x300) at the stored short side; 500x500 for images kept at their original size.
_SLOT_ASPECT = 5 / 3
_ORIGINAL_SLOT = 500 * 500


@dataclass
class EvalView:
    """A split's (share of) images in the eval view, on one device, sorted by id."""

    images: torch.Tensor  # uint8 [N, 3, S, S]
    states: torch.Tensor  # int8 [N, 20] (placeholders for an unlabeled split)
    ids: list[str]
    seconds: float  # time to read, decode and move it
    source: str = "decoded"  # or "cache" (shards.decoded_cache)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.states.nbytes


@dataclass
class RawImages:
    """A split's stored images on one device, sorted by id: image i, [3, heights[i], widths[i]],
    is images[i, :, :heights[i], :widths[i]], or images[i, :, :widths[i], :heights[i]] transposed
    where transposed[i] (a portrait image)."""

    images: torch.Tensor  # uint8 [N, 3, Hp, Wp]
    heights: torch.Tensor  # int64 [N], the image's own orientation
    widths: torch.Tensor  # int64 [N]
    transposed: torch.Tensor  # bool [N]
    states: torch.Tensor  # int8 [N, 20]
    ids: list[str]
    seconds: float
    source: str = "decoded"

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.images, self.heights, self.widths, self.transposed, self.states))


def train_view(source: RawImages | EvalView, index: torch.Tensor, *, preset: str, image_size: int,
               generator: torch.Generator, after: v2.Transform | None = None, after_seed: int = 0) -> torch.Tensor:
    """The batch of rows `index` (on the source's device) in the train-time `preset` (shards.presets):
    the cropping presets cut RandomResizedCrop boxes out of RawImages; flip and none start from an
    EvalView. `after` (shards.presets.after_crop: a policy, RandomErasing) then runs on each image."""
    if preset in CROPPING:
        if not isinstance(source, RawImages):
            raise TypeError(f"{preset} crops the stored images: load them with load_raw")
        heights, widths = source.heights[index], source.widths[index]
        boxes = crop_boxes(heights, widths, generator)
        flips = draw_flips(len(index), index.device, generator)
        images = crop_flips(source.images[index], heights, widths, source.transposed[index], boxes, flips, image_size)
    else:
        images = source.images[index]
        images = images if preset == "none" else random_flips(images, generator)
    return images if after is None else per_image(images, after, after_seed)


def per_image(images: torch.Tensor, transform: v2.Transform, seed: int) -> torch.Tensor:
    """`transform` on each image of a batch, its draws a function of `seed` alone. torchvision's policies
    draw their parameters from the global CPU generator (never a sync with the device), and one
    call on a batch would give every image the same operations: hence the loop, under a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image) for image in images])


def load_eval_view(shards_dir: str | Path, split: str, *, image_size: int, device: torch.device,
                   num_workers: int, rank: int = 0, world_size: int = 1, batch_size: int = 64) -> EvalView:
    """`split`'s eval view for this rank's exactly-once share (all of it with world_size 1)."""
    start = time.perf_counter()
    images, states, ids = [], [], []
    for batch_images, batch_states, batch_ids in eval_loader(
            shards_dir, split=split, batch_size=batch_size, rank=rank, world_size=world_size,
            num_workers=num_workers, image_size=image_size):
        images.append(batch_images.to(device))
        states.append(batch_states.to(device))
        ids.extend(batch_ids)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    index = torch.tensor(order, dtype=torch.long, device=device)
    size = (0, 3, image_size, image_size)
    return EvalView(
        images=torch.cat(images)[index] if images else torch.empty(size, dtype=torch.uint8, device=device),
        states=torch.cat(states)[index] if states else torch.empty((0, 20), dtype=torch.int8, device=device),
        ids=[ids[i] for i in order], seconds=time.perf_counter() - start)


def padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """uint8 [3, H, W] images of any sizes -> RawImages' (images, heights, widths, transposed), on the host."""
    heights = torch.tensor([image.shape[1] for image in images], dtype=torch.long)
    widths = torch.tensor([image.shape[2] for image in images], dtype=torch.long)
    transposed = heights > widths
    slot = (int(torch.minimum(heights, widths).max()), int(torch.maximum(heights, widths).max())) if images else (0, 0)
    out = torch.zeros((len(images), 3, *slot), dtype=torch.uint8)
    for row, image in enumerate(images):
        stored = image.transpose(1, 2) if image.shape[1] > image.shape[2] else image
        out[row, :, :stored.shape[1], :stored.shape[2]] = stored
    return out, heights, widths, transposed


def load_raw(shards_dir: str | Path, split: str, *, device: torch.device, num_workers: int) -> RawImages:
    """All of `split`'s stored images, decoded, at their own sizes (see RawImages)."""
    start = time.perf_counter()
    decoded = [sample for chunk in sample_loader(shards_dir, split=split, num_workers=num_workers) for sample in chunk]
    decoded.sort(key=lambda sample: sample[2])
    # One host buffer, then one copy: thousands of small copies to a GPU would each synchronize.
    images, heights, widths, transposed = padded([image for image, _, _ in decoded])
    states = torch.stack([states for _, states, _ in decoded]) if decoded else torch.empty((0, 20), dtype=torch.int8)
    return RawImages(images=images.to(device), heights=heights.to(device), widths=widths.to(device),
                     transposed=transposed.to(device), states=states.to(device),
                     ids=[image_id for _, _, image_id in decoded], seconds=time.perf_counter() - start)


def estimate_raw_bytes(shards_dir: str | Path, split: str) -> int:
    """Bytes `load_raw` will hold for `split`, from the manifest's count and stored short side."""
    manifest = load_manifest(shards_dir)
    count = split_entry(manifest, split, shards_dir)["count"]
    short = manifest.get("image_policy", {}).get("short_side_max")
    slot = _ORIGINAL_SLOT if short is None else short * round(short * _SLOT_ASPECT)
    return count * 3 * slot


def eval_view_bytes(count: int, image_size: int) -> int:
    """Bytes of `count` images in the eval view."""
    return count * 3 * image_size * image_size


def _decode_eval(shards_dir: str | Path, split: str, image_size: int,
                 num_workers: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """All of `split` in the eval view on the host, sorted by id: {"images", "states"}, ids."""
    view = load_eval_view(shards_dir, split, image_size=image_size, device=torch.device("cpu"),
                          num_workers=num_workers)
    return {"images": view.images.numpy(), "states": view.states.numpy()}, view.ids


RAW_ARRAYS = ("images", "heights", "widths", "transposed", "states")


def _decode_raw(shards_dir: str | Path, split: str, num_workers: int) -> tuple[dict[str, np.ndarray], list[str]]:
    raw = load_raw(shards_dir, split, device=torch.device("cpu"), num_workers=num_workers)
    return {name: getattr(raw, name).numpy() for name in RAW_ARRAYS}, raw.ids


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # A mapped array stays mapped on CPU (no copy; processes share its pages); a GPU gets one copy.
    return torch.from_numpy(array).to(device)


def cached_eval_view(cache: Path | None, shards_dir: str | Path, split: str, *, image_size: int,
                     device: torch.device, num_workers: int, rank: int = 0, world_size: int = 1) -> EvalView:
    """`split`'s eval view through the decoded cache (shards.decoded_cache) at `cache`: all of it
    decoded or mapped, then this rank's exactly-once share, rows rank, rank + world_size, ..."""
    key = entry_key(shards_dir, split, {"kind": "eval", "image_size": image_size})
    found: Decoded = load_or_build(cache, f"{split}-eval{image_size}", key,
                                   lambda: _decode_eval(shards_dir, split, image_size, num_workers))
    start = time.perf_counter()
    images, states, ids = found.arrays["images"], found.arrays["states"], found.ids
    if world_size > 1:
        images, states = (np.ascontiguousarray(a[rank::world_size]) for a in (images, states))
        ids = ids[rank::world_size]
    return EvalView(images=_tensor(images, device), states=_tensor(states, device), ids=ids,
                    seconds=found.seconds + time.perf_counter() - start, source=found.source)


def cached_raw(cache: Path | None, shards_dir: str | Path, split: str, *, device: torch.device,
               num_workers: int) -> RawImages:
    """`split`'s stored images through the decoded cache at `cache` (see `cached_eval_view`)."""
    key = entry_key(shards_dir, split, {"kind": "raw", "layout": "padded, portrait transposed"})
    found = load_or_build(cache, f"{split}-raw", key, lambda: _decode_raw(shards_dir, split, num_workers))
    start = time.perf_counter()
    arrays = {name: _tensor(found.arrays[name], device) for name in RAW_ARRAYS}
    return RawImages(ids=found.ids, source=found.source, seconds=found.seconds + time.perf_counter() - start,
                     **arrays)
