"""The training and evaluation pipelines over the shards (webdataset + torch DataLoader).

Both yield `(images uint8 [B, 3, S, S], states int8 [B, C] 1/0/-1, ids list[str])`, C the
manifest's classes (VOC's devkit states: 0 is difficult only).
A split packed without annotations (manifest "labeled": false, labels hidden) still yields
states, all UNLABELED_STATE (0, shards/annotations.py), so its batches collate like any
other; they are not labels, and only eval_loader reads such a split (train_loader refuses it).
Callers tell labeled from unlabeled splits with shards.manifest.is_labeled, not from states.
rank and world_size are arguments (the trainer passes accelerator.process_index and
num_processes): nothing here reads RANK/WORLD_SIZE or torch.distributed, and the loaders
must stay out of `accelerator.prepare`, which would split them a second time (docs/NOTES.md).

Train: every rank yields exactly `steps_per_epoch(...)` batches, so DDP never waits on a
rank that ran dry. Each epoch the shards are permuted by (seed, epoch) and dealt to the
ranks, then to each rank's loader workers; a worker cycles through its shards (a new
order per cycle) until it has produced its share of the batches. Which samples a rank
sees, and in which order, is a pure function of (seed, epoch, rank, num_workers). With
workers, the DataLoader's generator is seeded the same way, so their augmentation repeats
too; with num_workers=0 augmentation draws from the global torch RNG (set_seed, resume).

Eval: shard i goes to rank i % world_size, then to that rank's workers in turn, so every
sample of the split is read exactly once across ranks x workers; ranks may end with
different batch counts. The trainer gathers ids and checks them against the manifest.

Workers start from a forkserver (shards.workers, which says why), so each pipeline is pickled
to them: every stage here is a module-level function, a functools.partial of one, or a small
class; no closures or lambdas.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

try:
    # torchvision's libjpeg-turbo decoder: ~30% less time per sample than PIL + conversion
    # on this box. Deprecated since torchvision 0.29 in favour of torchcodec; PIL takes over
    # where it is gone.
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the torchvision version
    decode_jpeg = None

from shards.annotations import UNLABELED_STATE
from shards.classes import class_list
from shards.manifest import is_labeled, load_manifest, split_entry
from shards.presets import eval_transform, train_transform
from shards.workers import make_loader

SHUFFLE_BUFFER = 512  # samples (still JPEG bytes, ~25 KB each at short side 256) per worker

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


class CorruptSampleWarning(UserWarning):
    """A sample or shard that could not be read; the message names its key and shard."""


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def seeded(*parts: object) -> random.Random:
    """A random.Random for a tuple of parts: the same stream in every process and run."""
    # String seeds are hashed with SHA-512 by `random`: stable across runs and processes.
    return random.Random("/".join(map(str, parts)))


def _shard_urls(shards_dir: str | Path, split: str) -> tuple[list[str], dict, int]:
    """(shard paths, the split's manifest entry, the number of classes)."""
    manifest = load_manifest(shards_dir)
    entry = split_entry(manifest, split, shards_dir)
    return [str(Path(shards_dir) / name) for name in entry["shards"]], entry, class_list(manifest).num_classes


def steps_per_epoch(shards_dir: str | Path, *, batch_size: int, world_size: int, split: str = "train") -> int:
    """Batches every rank yields per training epoch: max(1, count // (batch_size * world_size))."""
    _, entry, _ = _shard_urls(shards_dir, split)
    return _steps(entry, batch_size, world_size)


def _steps(entry: dict, batch_size: int, world_size: int) -> int:
    return max(1, entry["count"] // (batch_size * world_size))


class _TrainShards(IterableDataset):
    """Endless shard urls for one (rank, worker), in an order fixed by (seed, epoch, rank, worker)."""

    def __init__(self, urls: list[str], *, seed: int, epoch: int, rank: int, world_size: int) -> None:
        order = sorted(urls)
        seeded(seed, epoch).shuffle(order)
        # With more ranks than shards a rank reads all of them (in its own order) rather than none.
        self.rank_urls = order[rank::world_size] or order
        self.seed_parts = (seed, epoch, rank)

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker()
        mine = self.rank_urls[worker::num_workers] or self.rank_urls
        for cycle in itertools.count():
            urls = list(mine)
            seeded(*self.seed_parts, worker, cycle).shuffle(urls)
            yield from ({"url": url} for url in urls)


class _EvalShards(IterableDataset):
    """Each shard once: shard i -> rank i % world_size -> that rank's workers in turn."""

    def __init__(self, urls: list[str], *, rank: int, world_size: int) -> None:
        self.rank_urls = sorted(urls)[rank::world_size]

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker()
        yield from ({"url": url} for url in self.rank_urls[worker::num_workers])


def _warn_and_continue(exn: Exception) -> bool:
    """webdataset handler for unreadable shards/tar members: report, never drop silently."""
    warnings.warn(f"skipping unreadable shard data: {exn!r}", CorruptSampleWarning, stacklevel=2)
    return True


def decode_rgb(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] RGB (grayscale and CMYK files converted)."""
    if decode_jpeg is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # handled: see the import above
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return decode_rgb_pil(data)


def decode_rgb_pil(data: bytes) -> torch.Tensor:
    """decode_rgb with PIL (any format PIL reads)."""
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def decode_sample(sample: dict, num_classes: int,
                  labeled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A raw webdataset sample -> (uint8 [3, H, W] RGB image, int8 [num_classes] states, id).

    A sample packed without annotations ("labels": null) gets UNLABELED_STATE for every class.
    `labeled`, when given, is what the manifest says of the split: a sample that disagrees
    (labels in an unlabeled split or the reverse) means the shards and manifest.json do not match.
    """
    record = json.loads(sample["json"])
    labels = record["labels"]
    if labeled is not None and labeled != (labels is not None):
        raise ValueError(f"labels are {'null' if labels is None else 'set'} but manifest.json says the split is "
                         f"{'labeled' if labeled else 'unlabeled'}: the shards do not match it (repack them)")
    if labels is None:
        return decode_rgb(sample["jpg"]), torch.full((num_classes,), UNLABELED_STATE, dtype=torch.int8), record["id"]
    states = torch.tensor(labels, dtype=torch.int8)
    if states.shape != (num_classes,):
        raise ValueError(f"labels has shape {tuple(states.shape)}, expected ({num_classes},): one per class of manifest.json")
    return decode_rgb(sample["jpg"]), states, record["id"]


def _decode_and_transform(samples: Iterable[dict], *, transform: Callable[[torch.Tensor], torch.Tensor] | None,
                         labeled: bool, num_classes: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, str]]:
    """Pipeline stage (bound with functools.partial: stages must pickle for forkserver workers)."""
    corrupt = 0
    for sample in samples:
        try:
            image, states, image_id = decode_sample(sample, num_classes, labeled)
        except Exception as err:  # noqa: BLE001 - any failure of one sample is reported, not fatal
            corrupt += 1
            worker, _ = _worker()
            warnings.warn(f"skipping corrupt sample {sample.get('__key__')!r} in {sample.get('__url__')}: "
                          f"{err!r} ({corrupt} corrupt so far in loader worker {worker})",
                          CorruptSampleWarning, stacklevel=2)
            continue
        yield (image if transform is None else transform(image)), states, image_id


def _collate(items: list[tuple[torch.Tensor, torch.Tensor, str]]) -> Batch:
    images, states, ids = zip(*items)
    return torch.stack(images), torch.stack(states), list(ids)


def _shuffled(samples: Iterable[dict], *, seed_parts: tuple) -> Iterator[dict]:
    """Pipeline stage: a shuffle buffer seeded by (seed_parts, worker)."""
    rng = seeded(*seed_parts, "samples", _worker()[0])
    yield from wds.shuffle(SHUFFLE_BUFFER, initial=SHUFFLE_BUFFER // 4, rng=rng)(samples)


def _worker_share(batches: Iterable[Batch], *, total_batches: int) -> Iterator[Batch]:
    """Pipeline stage: cut each worker's stream so the DataLoader yields exactly total_batches overall."""
    worker, num_workers = _worker()
    share = total_batches // num_workers + (worker < total_batches % num_workers)
    yield from itertools.islice(batches, share)


class _Epoch(wds.DataPipeline):
    """The train pipeline with a length, so len(loader) == steps (progress bars). webdataset's
    with_length makes a class at run time, which does not pickle to forkserver workers."""

    def __init__(self, *stages: object, steps: int) -> None:
        super().__init__(*stages)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps


def train_loader(shards_dir: str | Path, *, batch_size: int, rank: int, world_size: int, num_workers: int,
                 seed: int, epoch: int, preset: str, image_size: int, split: str = "train",
                 erasing: float = 0.0) -> DataLoader:
    """Exactly steps_per_epoch(...) shuffled, augmented uint8 batches for this rank (see module doc)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    urls, entry, num_classes = _shard_urls(shards_dir, split)
    if not is_labeled(entry):  # its states are all the sentinel: training on them would learn "nothing here"
        raise ValueError(f"split '{split}' of {shards_dir} was packed without annotations (labels hidden): "
                         "it can be scored with eval_loader, not trained on")
    steps = _steps(entry, batch_size, world_size)
    seed_parts = (seed, epoch, rank)
    pipeline = _Epoch(
        _TrainShards(urls, seed=seed, epoch=epoch, rank=rank, world_size=world_size),
        wds.tarfile_to_samples(handler=_warn_and_continue),
        functools.partial(_shuffled, seed_parts=seed_parts),
        functools.partial(_decode_and_transform, transform=train_transform(preset, image_size, erasing), labeled=True,
                          num_classes=num_classes),
        wds.batched(batch_size, collation_fn=_collate, partial=False),
        functools.partial(_worker_share, total_batches=steps),
        steps=steps,
    )
    generator = torch.Generator().manual_seed(seeded(*seed_parts, "torch").getrandbits(63))
    # Pinned host memory only helps (and only works) with a CUDA device to copy to.
    return make_loader(pipeline, batch_size=None, num_workers=num_workers, generator=generator,
                       pin_memory=torch.cuda.is_available())


def eval_loader(shards_dir: str | Path, *, split: str, batch_size: int, rank: int, world_size: int,
                num_workers: int, image_size: int) -> DataLoader:
    """This rank's part of `split` in the eval view; over all ranks every sample exactly once.

    An unlabeled split (is_labeled(entry) false) yields UNLABELED_STATE states: scores only, no metric.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    urls, entry, num_classes = _shard_urls(shards_dir, split)
    source = _EvalShards(urls, rank=rank, world_size=world_size)
    pipeline = wds.DataPipeline(
        source,
        wds.tarfile_to_samples(handler=_warn_and_continue),
        functools.partial(_decode_and_transform, transform=eval_transform(image_size), labeled=is_labeled(entry),
                          num_classes=num_classes),
        wds.batched(batch_size, collation_fn=_collate, partial=True),
    )
    # Workers beyond this rank's shard count would have nothing to read.
    return make_loader(pipeline, batch_size=None, num_workers=min(num_workers, len(source.rank_urls)),
                       pin_memory=torch.cuda.is_available())


def sample_loader(shards_dir: str | Path, *, split: str, num_workers: int, chunk: int = 64) -> DataLoader:
    """Every sample of `split` once, decoded but not transformed: lists of up to `chunk`
    (uint8 [3, H, W] at the stored size, int8 [C] states, id). For loaders that keep a split in memory."""
    urls, entry, num_classes = _shard_urls(shards_dir, split)
    source = _EvalShards(urls, rank=0, world_size=1)
    pipeline = wds.DataPipeline(
        source,
        wds.tarfile_to_samples(handler=_warn_and_continue),
        functools.partial(_decode_and_transform, transform=None, labeled=is_labeled(entry),
                          num_classes=num_classes),
        wds.batched(chunk, collation_fn=list, partial=True),  # images differ in size: no stacking
    )
    return make_loader(pipeline, batch_size=None, num_workers=min(num_workers, len(source.rank_urls)))
