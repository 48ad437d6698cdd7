"""The loop a user would write by hand with Accelerate (complete_cv_example's shape), for
benchmarks/train_pass.py to hold the trainer's train pass against.

    accelerate launch --multi_gpu --num_processes 2 benchmarks/bare_loop.py --shards S --epochs 3 \
        --loader device|stream [--batch-size 8] [--image-size 112] [--workers 1] [--json-out FILE]

The demo's recipe (configs/demo.yaml): vocnet, AdamW lr 0.003 wd 0.01 with a cosine schedule,
channels_last, random horizontal flips, soft-margin loss over the 21 logits, batches of 8 per
process. `device`: the train split decoded once into memory (resized, centre-cropped), a seeded
shuffle per epoch, each rank its strided share, the flip on the whole batch. `stream`: webdataset
decoding every epoch in DataLoader workers, split by rank and worker. Each epoch's images/s counts
the train pass alone (all ranks' images / wall seconds between two barriers).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
import webdataset as wds
from accelerate import Accelerator
from PIL import Image

from models import create_model
from shards.classes import VOC

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def _sample(jpg: bytes, meta: bytes, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image as uint8 [3, size, size] and its 21 targets (logit 0, the background, is never on)."""
    image = F.pil_to_tensor(Image.open(io.BytesIO(jpg)).convert("RGB"))
    image = F.center_crop(F.resize(image, size, antialias=True), size)
    states = json.loads(meta)["labels"]
    return image, torch.tensor([0.0] + [1.0 if s == 1 else 0.0 for s in states])


def _train_split(shards: Path) -> tuple[list[str], int]:
    """The train split's shard files and image count."""
    train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]
    return [str(shards / name) for name in train["shards"]], train["count"]


def device_batches(images: torch.Tensor, targets: torch.Tensor, epoch: int, rank: int, world: int, size: int):
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))[rank::world]
    for i in range(len(order) // size):
        index = order[i * size:(i + 1) * size]
        yield images[index], targets[index]


def stream_loader(urls: list[str], size: int, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    pipeline = (wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node, empty_check=False)
                .shuffle(100).map(lambda s: _sample(s["jpg"], s["json"], size)).batched(batch_size, partial=False))
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers)


def stream_batches(urls: list[str], size: int, batch_size: int, workers: int, steps: int):
    """`steps` batches on every rank (DDP needs as many on each): a rank whose shards hold fewer
    images goes round them again."""
    yielded = 0
    while yielded < steps:
        before = yielded
        for batch in stream_loader(urls, size, batch_size, workers):
            yield batch
            yielded += 1
            if yielded == steps:
                return
        if yielded == before:
            raise SystemExit("bare_loop: this rank's shards hold no full batch (fewer shards than processes?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loader", choices=("device", "stream"), default="device")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    accelerator = Accelerator()
    urls, count = _train_split(args.shards)
    if args.loader == "device":
        pairs = [_sample(s["jpg"], s["json"], args.image_size)
                 for s in wds.WebDataset(urls, shardshuffle=False, nodesplitter=lambda u: u, empty_check=False)]
        images, targets = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    torch.manual_seed(0)
    model = create_model("vocnet").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=0.01)
    steps = count // (args.batch_size * accelerator.num_processes)  # per rank and epoch, as the trainer counts
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps * args.epochs)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = torch.nn.MultiLabelSoftMarginLoss()
    mean, std = MEAN.to(accelerator.device), STD.to(accelerator.device)

    rates = []
    for epoch in range(1, args.epochs + 1):
        batches = (device_batches(images, targets, epoch, accelerator.process_index, accelerator.num_processes,
                                  args.batch_size) if args.loader == "device"
                   else stream_batches(urls, args.image_size, args.batch_size, args.workers, steps))
        model.train()
        accelerator.wait_for_everyone()
        start, seen = time.perf_counter(), 0
        for x, y in batches:
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            seen += len(x)
        accelerator.wait_for_everyone()
        seconds = time.perf_counter() - start
        rate = seen * accelerator.num_processes / seconds
        rates.append(rate)
        accelerator.print(f"epoch {epoch} images_per_s {rate:.1f} seconds {seconds:.2f}")
    if args.json_out is not None and accelerator.is_main_process:
        args.json_out.write_text(json.dumps({"images_per_s": rates}))


if __name__ == "__main__":
    main()
