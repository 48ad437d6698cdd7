"""`--loader device`: the splits decoded once and held on the training device; `--loader auto` chooses.

Each process decodes its splits once (the streaming reader's own workers and decoder) into
memory on its device (shards.resident): all of train, since an epoch's permutation may hand
it any image, and its exactly-once share of every split's eval view. From then on an epoch
does no per-image CPU work: per batch, an index slice on the device and, for the augmenting
presets, one batched RandomResizedCrop and/or flip (shards.device_views).

Train order: one permutation per epoch from (seed, epoch), the same on every rank, dealt so
that rank r's batch k is positions (k * world + r) * B ... + B: every rank gets the same
number of full batches, and no image comes twice in an epoch across ranks. A batch's
augmentation draws from a generator seeded by (seed, epoch, rank, k), so batch k is the same
whether or not the run was stopped and resumed before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from shards.decoded_cache import cache_root
from shards.manifest import load_manifest, split_entry
from shards.reader import Batch, seeded
from shards.resident import (EvalView, RawImages, cached_eval_view, cached_raw, estimate_raw_bytes, eval_view_bytes,
                             train_view)
from trainer.data.stream import DEBUG_BATCHES, RunData, ShardStream
from trainer.config import ConfigError, TrainConfig
from trainer.config.fields import eval_splits

AUTO_FRACTION = 0.5  # --loader auto keeps the data on the device when it needs at most this part of the free memory
DEVICE_FRACTION = 0.9  # --loader device refuses to start above this part (the model and activations need the rest)
GB = 1e9


def _seed(*parts: object) -> int:
    return seeded(*parts).getrandbits(63)


class DeviceData(RunData):
    """The run's splits on `device`; the same members as ShardStream."""

    def __init__(self, cfg: TrainConfig, *, rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(cfg, rank=rank, world_size=world_size)
        self.device = device
        workers = 0 if cfg.debug else cfg.workers
        # Whole splits, decoded once or mapped from the decoded cache; each rank then keeps its share.
        self.cache = cache_root(cfg.decoded_cache, cfg.shards)
        load = dict(image_size=cfg.image_size, device=device, num_workers=workers)
        share = dict(rank=rank, world_size=world_size)
        # RandomResizedCrop needs the stored images; the other presets start from the eval view.
        if cfg.augment == "crop_flip":
            self.train_source: RawImages | EvalView = cached_raw(self.cache, cfg.shards, self.train_split,
                                                                 device=device, num_workers=workers)
            self.views = {self.train_split: cached_eval_view(self.cache, cfg.shards, self.train_split, **load, **share)}
        else:
            full = cached_eval_view(self.cache, cfg.shards, self.train_split, **load)
            self.views = {self.train_split: _share(full, rank, world_size)}
            self.train_source = full
        for split in self.eval_splits[1:]:  # --val-split (unless none) and test
            self.views[split] = cached_eval_view(self.cache, cfg.shards, split, **load, **share)
        loaded = [self.train_source, *self.views.values()]
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
                                generator=generator)
            yield images, source.states[index], [source.ids[i] for i in order[start:start + size].tolist()]

    def eval(self, split: str) -> tuple[Iterable[Batch], list[str]]:
        """This rank's share of `split` in batches, and the ids all ranks together must score."""
        view, size = self.views[split], self.cfg.batch_size
        batches = [(view.images[i:i + size], view.states[i:i + size], view.ids[i:i + size])
                   for i in range(0, len(view.ids), size)]
        if not self.cfg.debug:
            return batches, self.split_ids[split]
        kept = batches[:DEBUG_BATCHES]
        return kept, [image_id for _, _, ids in kept for image_id in ids]


def _share(view: EvalView, rank: int, world_size: int) -> EvalView:
    """Rank `rank`'s exactly-once part of a whole split's view: rows rank, rank + world_size, ..."""
    if world_size == 1:
        return view
    return EvalView(images=view.images[rank::world_size], states=view.states[rank::world_size],
                    ids=view.ids[rank::world_size], seconds=0.0, source=view.source)


def device_bytes(cfg: TrainConfig, world_size: int) -> int:
    """What DeviceData will hold per process (an estimate for the stored images: see shards.resident)."""
    manifest, evaluated = load_manifest(cfg.shards), eval_splits(cfg)
    trained = evaluated[0]
    counts = {split: split_entry(manifest, split, cfg.shards)["count"] for split in evaluated}
    share = {split: -(-count // world_size) for split, count in counts.items()}  # the largest rank's
    if cfg.augment == "crop_flip":
        train = estimate_raw_bytes(cfg.shards, trained) + eval_view_bytes(share[trained], cfg.image_size)
    else:
        train = eval_view_bytes(counts[trained], cfg.image_size)
    return train + eval_view_bytes(sum(share[split] for split in evaluated[1:]), cfg.image_size)


def free_bytes(device: torch.device, processes: int) -> int:
    """Memory this process may fill: the GPU's free memory, or on CPU the host's available RAM
    shared by all processes (they may all run on this host)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available // processes


def choose_loader(loader: str, need: int, free: int, device: str) -> tuple[str, str]:
    """('stream' | 'device', why) for --loader `loader` when the device data needs `need` of `free`
    bytes per process; ConfigError when --loader device cannot fit."""
    numbers = f"{need / GB:.2f} GB per process, {free / GB:.2f} GB free on {device}"
    if loader == "stream":
        return "stream", "--loader stream"
    if loader == "device":
        if need > DEVICE_FRACTION * free:
            raise ConfigError(f"--loader device: the decoded splits need {numbers} (at most {DEVICE_FRACTION:.0%} of it "
                              "may be used); use --loader stream, a smaller --image-size, or fewer processes per machine")
        return "device", "--loader device"
    if need > AUTO_FRACTION * free:
        return "stream", f"--loader auto: {numbers}, over the {AUTO_FRACTION:.0%} auto limit"
    return "device", f"--loader auto: {numbers}, within {AUTO_FRACTION:.0%}"


def open_data(cfg: TrainConfig, accelerator: Accelerator) -> tuple[RunData, str]:
    """The run's data source for --loader, and a line saying which and why."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if cfg.loader == "stream":
        name, why = choose_loader("stream", 0, 0, device.type)
    else:
        # Every rank must choose alike: decide on the smallest free memory of all ranks.
        free = min(gather_object([free_bytes(device, world)]))
        name, why = choose_loader(cfg.loader, device_bytes(cfg, world), free, device.type)
    if name == "stream":
        return ShardStream(cfg, rank=rank, world_size=world), f"loader: stream ({why})"
    # With a cache, each machine's first process decodes and writes it; the others then map it.
    # Decoding draws from the global RNG (each DataLoader seeds its workers from it) and mapping
    # does not: fork it, so that dropout etc. are the same whether the data came from the cache.
    with accelerator.local_main_process_first(), torch.random.fork_rng(devices=[]):
        data = DeviceData(cfg, rank=rank, world_size=world, device=device)
    return data, f"loader: device ({why}); {data.describe()}"
