"""`--loader device`: the splits decoded once and held on the training device (trainer/data/choose.py picks it).

Each process decodes its splits once (the streaming reader's own workers and decoder) into
memory on its device (shards.resident): all of train, since an epoch's permutation may hand
it any image, and its exactly-once share of every split's eval view. From then on an epoch
does no per-image CPU work: per batch, an index slice on the device and, for the augmenting
presets, one batched RandomResizedCrop and/or flip (shards.device_views). A policy
(randaugment, trivialaugment) and --random-erasing then run per image, on the device, as
torchvision's per-image transforms (shards.resident.per_image).

Train order: one permutation per epoch from (seed, epoch), the same on every rank, dealt so
that rank r's batch k is positions (k * world + r) * B ... + B: every rank gets the same
number of full batches, and no image comes twice in an epoch across ranks. A batch's
augmentation draws from a generator seeded by (seed, epoch, rank, k), so batch k is the same
whether or not the run was stopped and resumed before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from shards.decoded_cache import cache_root
from shards.manifest import load_manifest, split_entry
from shards.presets import CROPPING, after_crop
from shards.reader import Batch, seeded
from shards.resident import (EvalView, RawImages, cached_eval_view, cached_raw, estimate_raw_bytes, eval_view_bytes,
                             train_view)
from trainer.data.stream import RunData
from trainer.config import TrainConfig
from trainer.config.fields import eval_splits, train_split


def _seed(*parts: object) -> int:
    return seeded(*parts).getrandbits(63)


class DeviceData(RunData):
    """The run's splits on `device`; the same members as ShardStream."""

    def __init__(self, cfg: TrainConfig, *, rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(cfg, rank=rank, world_size=world_size)
        self.device = device
        self.after_crop = after_crop(cfg.augment, cfg.random_erasing)
        workers = 0 if cfg.debug else cfg.workers
        # Whole splits, decoded once or mapped from the decoded cache; each rank then keeps its share.
        self.cache = cache_root(cfg.decoded_cache, cfg.shards)
        parts = {}
        for part in device_parts(cfg):
            if part.raw:
                parts[part] = cached_raw(self.cache, cfg.shards, part.split, device=device, num_workers=workers)
            else:
                parts[part] = cached_eval_view(self.cache, cfg.shards, part.split, image_size=cfg.image_size,
                                               device=device, num_workers=workers,
                                               **({} if part.whole else dict(rank=rank, world_size=world_size)))
        self.train_source: RawImages | EvalView = parts[device_parts(cfg)[0]]
        self.views = {part.split: view for part, view in parts.items() if not part.whole}
        if self.train_split not in self.views:  # the whole eval view trains: this rank's share evaluates
            self.views[self.train_split] = _share(self.train_source, rank, world_size)
        loaded = [*parts.values(), *self.views.values()]
        self.nbytes = sum({id(part): part.nbytes for part in loaded}.values())  # the train share may be `full`
        self.load_seconds = sum({id(part): part.seconds for part in loaded}.values())
        sources = sorted({part.source for part in loaded})
        self.source = sources[0] if len(sources) == 1 else "partly " + ", partly ".join(sources)

    def describe(self) -> str:
        """Where the splits came from and how long it took, for the run's `loader:` line."""
        if self.source == "cache":
            return f"mapped {self.nbytes / 1e6:.0f} MB from the decoded cache {self.cache} onto {self.device} " \
                   f"in {self.load_seconds:.1f} s"
        if self.source.startswith("partly"):  # some splits cached by an earlier run, the others decoded now
            return f"decoded {self.nbytes / 1e6:.0f} MB onto {self.device} in {self.load_seconds:.1f} s, partly " \
                   f"mapped from the decoded cache {self.cache}"
        where = f"; cached in {self.cache}" if self.source == "decoded" and self.cache else ""
        return f"{self.source} {self.nbytes / 1e6:.0f} MB onto {self.device} in {self.load_seconds:.1f} s{where}"

    def train(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch` from batch `skip` on (see the module doc for the order)."""
        source, size, world = self.train_source, self.cfg.batch_size, self.world_size
        order = torch.randperm(len(source.ids), generator=torch.Generator().manual_seed(_seed(self.cfg.seed, epoch)))
        needed = self.batches * world * size
        if needed > len(order):  # fewer images than one step of all ranks (steps_per_epoch is at least 1): cycle
            order = order.repeat(-(-needed // len(order)))[:needed]
        on_device = order.to(self.device)  # once per epoch: a per-batch host->device copy would sync every step
        for k in range(skip, self.batches):
            start = (k * world + self.rank) * size
            index = on_device[start:start + size]
            generator = torch.Generator(self.device).manual_seed(_seed(self.cfg.seed, epoch, self.rank, k))
            images = train_view(source, index, preset=self.cfg.augment, image_size=self.cfg.image_size,
                                generator=generator, after=self.after_crop,
                                after_seed=_seed(self.cfg.seed, epoch, self.rank, k, "after"))
            yield images, source.states[index], [source.ids[i] for i in order[start:start + size].tolist()]

    def _eval_batches(self, split: str) -> list[Batch]:
        view, size = self.views[split], self.cfg.batch_size
        return [(view.images[i:i + size], view.states[i:i + size], view.ids[i:i + size])
                for i in range(0, len(view.ids), size)]


def _share(view: EvalView, rank: int, world_size: int) -> EvalView:
    """Rank `rank`'s exactly-once part of a whole split's view: rows rank, rank + world_size, ..."""
    if world_size == 1:
        return view
    return EvalView(images=view.images[rank::world_size], states=view.states[rank::world_size],
                    ids=view.ids[rank::world_size], seconds=0.0, source=view.source)




class Part(NamedTuple):
    split: str
    raw: bool  # the stored images (RandomResizedCrop needs them), or the eval view (resized, centred)
    whole: bool  # all of the split, or this rank's exactly-once share


def device_parts(cfg: TrainConfig) -> list[Part]:
    """What DeviceData holds, the part it trains from first: the cropping presets crop the stored images;
    the other presets start from the whole eval view. Every evaluated split, as this rank's share."""
    trained = train_split(cfg)
    first = [Part(trained, True, True), Part(trained, False, False)] if cfg.augment in CROPPING else \
        [Part(trained, False, True)]
    return first + [Part(split, False, False) for split in eval_splits(cfg)[1:]]


def device_bytes(cfg: TrainConfig, world_size: int) -> int:
    """What DeviceData will hold per process (an estimate for the stored images: see shards.resident)."""
    manifest = load_manifest(cfg.shards)
    total = 0
    for part in device_parts(cfg):
        count = split_entry(manifest, part.split, cfg.shards)["count"]
        if part.raw:
            total += estimate_raw_bytes(cfg.shards, part.split)
        else:
            total += eval_view_bytes(count if part.whole else -(-count // world_size), cfg.image_size)  # the largest share
    return total
