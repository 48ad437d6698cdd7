"""Train-pipeline throughput: VOC folder + torchvision vs our shards.

`python -m shards.bench --voc VOCDEVKIT --shards SHARDS_DIR [--workers N --batches N]`

(a) torchvision.datasets.VOCDetection on the folder with torchvision transforms, the way
    the course notebook read VOC: full-size JPEG decode (PIL), RandomResizedCrop(227),
    flip, ToTensor, Normalize, labels from the target dict, a shuffling DataLoader;
(b) shards.reader.train_loader + shards.transforms.normalize;
(c) the device path (`--loader device`): the split decoded once onto the best device (cuda
    when there is one, else cpu) by shards.resident.load_raw, then per batch an index slice
    of a per-epoch permutation kept on the device, shards.resident.train_view (batched
    RandomResizedCrop + flip) and normalize.
All yield float [B, 3, 227, 227] normalized images and [B, 20] int8 devkit states with the
same batch size; (a) and (b) use the same worker count and start fresh workers each epoch,
as in training; (c) decodes with that many workers once (timed apart: `device_load_seconds`)
and on a CPU computes with that many threads. Prints a table, then one JSON line:
{"folder_images_per_s", "shards_images_per_s", "ratio", "device_images_per_s", "device_ratio",
"device_load_seconds", "device"}; the ratios are over the folder reader.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torchvision import transforms as T
from torchvision.datasets import VOCDetection

from shards.annotations import VocObject, devkit_states
from shards.classes import IMAGENET_MEAN, IMAGENET_STD
from shards.reader import train_loader
from shards.resident import RawImages, load_raw, train_view
from shards.transforms import normalize
from shards.workers import make_loader

IMAGE_SIZE = 227


def states_from_target(target: dict) -> torch.Tensor:
    """VOCDetection's parsed-XML dict -> the 20 devkit states (what the shards store)."""
    objects = target["annotation"].get("object", [])
    parsed = [VocObject(o["name"], o.get("difficult", "0") == "1", o.get("truncated", "0") == "1", (0, 0, 0, 0))
              for o in objects]
    return torch.tensor(devkit_states(parsed), dtype=torch.int8)


def folder_batches(voc: Path, split: str, batch_size: int, workers: int) -> Iterator[tuple]:
    """(a): endless batches from VOCDetection; a new DataLoader iterator (new workers) per epoch."""
    # VOCDetection looks for <root>/VOCdevkit/VOC2007.
    transform = T.Compose([T.RandomResizedCrop(IMAGE_SIZE), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])
    dataset = VOCDetection(str(voc.parent), year="2007", image_set=split, transform=transform,
                           target_transform=states_from_target)
    # Workers from the same forkserver as (b)'s: the comparison is of the pipelines, not of process starts.
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    for _ in itertools.count():
        yield from loader



def shard_batches(shards: Path, split: str, batch_size: int, workers: int) -> Iterator[tuple]:
    """(b): endless batches from the shard loader, normalized like (a)."""
    for epoch in itertools.count():
        loader = train_loader(shards, batch_size=batch_size, rank=0, world_size=1, num_workers=workers,
                              seed=0, epoch=epoch, preset="crop_flip", image_size=IMAGE_SIZE, split=split)
        for images, states, _ in loader:
            yield normalize(images), states


def device_batches(raw: RawImages, batch_size: int, seed: int = 0) -> Iterator[tuple]:
    """(c): endless batches from a split held on raw's device, as trainer.data.device makes them."""
    if len(raw.ids) < batch_size:
        raise ValueError(f"the split has {len(raw.ids)} images, fewer than one batch of {batch_size}")
    device = raw.images.device
    generator = torch.Generator(device).manual_seed(seed)
    for _ in itertools.count():
        # The permutation stays on the device: a per-batch host->device index copy would sync.
        order = torch.randperm(len(raw.ids), device=device, generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            images = train_view(raw, index, preset="crop_flip", image_size=IMAGE_SIZE, generator=generator)
            yield normalize(images), raw.states[index]


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA kernels run asynchronously, the clock must not."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(batches: Iterator[tuple], count: int, device: torch.device = torch.device("cpu")) -> tuple[int, float]:
    """(images, seconds) over `count` batches, after one warm-up batch (worker start-up, first kernels)."""
    first = next(batches)
    assert first[0].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE) and first[0].dtype == torch.float32
    synchronize(device)
    images, start = 0, time.perf_counter()
    for images_batch, _ in itertools.islice(batches, count):
        images += images_batch.shape[0]
    synchronize(device)
    seconds = time.perf_counter() - start
    batches.close()  # shuts the DataLoader workers down before the next loader starts
    return images, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", type=Path, required=True, help="VOCdevkit folder (holding VOC2007/)")
    parser.add_argument("--shards", type=Path, required=True, help="the same data packed by shards.pack")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per loader (default 30)")
    args = parser.parse_args(argv)
    if args.voc.name != "VOCdevkit" or not (args.voc / "VOC2007").is_dir():
        parser.error(f"--voc {args.voc}: give the VOCdevkit folder itself (torchvision's VOCDetection "
                     "needs <root>/VOCdevkit/VOC2007)")
    runs: dict[str, Callable[[], Iterator[tuple]]] = {
        "folder": lambda: folder_batches(args.voc, args.split, args.batch_size, args.workers),
        "shards": lambda: shard_batches(args.shards, args.split, args.batch_size, args.workers),
    }
    # The loader workers already occupy the cores; intra-op threads in the main process
    # (normalize) would only fight them. Same setting for both pipelines.
    torch.set_num_threads(1)
    console = Console()
    table = Table(title=f"train pipeline, {args.workers} workers, batch {args.batch_size}, "
                        f"{IMAGE_SIZE}x{IMAGE_SIZE} normalized float")
    for column in ("loader", "images", "seconds", "images/s"):
        table.add_column(column, justify="right" if column != "loader" else "left")
    rates = {}
    for name, make in runs.items():
        images, seconds = measure(make(), args.batches)
        rates[name] = images / seconds
        table.add_row(name, str(images), f"{seconds:.2f}", f"{rates[name]:.0f}")

    device = best_device()
    raw = load_raw(args.shards, args.split, device=device, num_workers=args.workers)
    synchronize(device)
    load_seconds = raw.seconds
    # On a CPU the device path computes in this process: give it as many threads as the
    # loaders above had workers, so each pipeline gets the same cores.
    torch.set_num_threads(max(1, args.workers))
    images, seconds = measure(device_batches(raw, args.batch_size), args.batches, device)
    rates["device"] = images / seconds
    table.add_row(f"device ({device.type}; decode once {load_seconds:.1f} s)", str(images), f"{seconds:.2f}",
                  f"{rates['device']:.0f}")
    console.print(table)
    print(json.dumps({"folder_images_per_s": round(rates["folder"], 1),
                      "shards_images_per_s": round(rates["shards"], 1),
                      "ratio": round(rates["shards"] / rates["folder"], 2),
                      "device_images_per_s": round(rates["device"], 1),
                      "device_ratio": round(rates["device"] / rates["folder"], 2),
                      "device_load_seconds": round(load_seconds, 2),
                      "device": device.type}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
