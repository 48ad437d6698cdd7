"""Training throughput: the model alone vs the whole loop fed by each loader.

    python benchmarks/throughput.py --shards DIR [--model alexnet] [--batch-size 50] [--image-size 227]
        [--mixed-precision bf16] [--channels-last] [--compile] [--loaders stream,device] [--steps 100]

(a) model-only: trainer.loop.step.train_step under a real Accelerator on one uint8 batch already on
    the device, the same batch every step: the most the data path could ever let through
    (measured again right before each loader's (b));
(b) end-to-end: trainer.loop.step.train_updates (the loop trainer/main.py runs) fed by the trainer's
    own data source for each loader (trainer.data.choose.open_data: ShardStream or DeviceData,
    built from a TrainConfig over the shard folder), epoch after epoch, as in a run.
ratio = end-to-end / model-only (the issue's goal: >= 0.9 for AlexNet at 227 px, bf16,
channels_last on an H100). The first --warmup steps of each measurement are not timed
(compilation, cuDNN autotuning, loader start-up); the clock reads only after a device
synchronize. One Accelerator per process (Accelerate keeps its state per process), so one
precision / compile setting per call. Prints a table and one JSON line per loader.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from models import list_models
from shards.classes import VOC
from shards.presets import TRAIN_PRESETS
from trainer.data.stream import RunData
from trainer.data.choose import open_data
from trainer.loop.step import train_step, train_updates
from trainer.recipe.network import build_model
from trainer.recipe.loss import build_loss
from trainer.recipe.optim import build_optimizer, build_scheduler
from trainer.config import TrainConfig

LOADERS = ("stream", "device")
MB = 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak tensor memory since the last reset_peak (null on CPU: no allocator statistics there)."""
    return round(torch.cuda.max_memory_allocated(device) / MB, 1) if device.type == "cuda" else None


def timed(steps: Iterator[object], warmup: int, count: int, device: torch.device) -> float:
    """Images/s is count / seconds: the seconds of `count` items of `steps` after `warmup` untimed ones."""
    for _ in itertools.islice(steps, warmup):
        pass
    synchronize(device)
    start = time.perf_counter()
    done = sum(1 for _ in itertools.islice(steps, count))
    synchronize(device)
    if done < count:
        raise RuntimeError(f"the data source ended after {warmup + done} of {warmup + count} steps")
    return time.perf_counter() - start


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def all_epochs(data: RunData) -> Iterator:
    """The source's batches epoch after epoch, as a run draws them (a new epoch restarts the stream's workers)."""
    for epoch in itertools.count(1):
        yield from data.train(epoch)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True, help="shard folder (shards.pack)")
    parser.add_argument("--model", default="alexnet", choices=list_models())
    parser.add_argument("--batch-size", type=int, default=50, help="images per step (default 50, the report's)")
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--augment", default="crop_flip", choices=TRAIN_PRESETS,
                        help="train view (default crop_flip: the most per-batch loader work)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile (inductor) through Accelerate")
    parser.add_argument("--loaders", default="stream,device", help="comma-separated, of: " + ", ".join(LOADERS))
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before each measurement")
    parser.add_argument("--workers", type=int, default=4, help="loader worker processes (the trainer's --workers)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is visible")
    parser.add_argument("--json-out", type=Path, help="also write the records as one JSON file")
    args = parser.parse_args(argv)
    args.loaders = [name.strip() for name in args.loaders.split(",") if name.strip()]
    unknown = sorted(set(args.loaders) - set(LOADERS))
    if unknown or not args.loaders:
        parser.error(f"--loaders {','.join(args.loaders)}: choose from {', '.join(LOADERS)}")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if not (args.shards / "manifest.json").is_file():
        parser.error(f"--shards {args.shards}: no manifest.json there (pack one with python -m shards.pack)")
    return args


def prepared_step(cfg: TrainConfig) -> tuple[Accelerator, torch.nn.Module, dict]:
    """The Accelerator, model and train_step keyword arguments trainer/main.py would build for `cfg`
    (its Accelerator settings, channels_last, fused optimizers on CUDA; one update of schedule)."""
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu, step_scheduler_with_optimizer=False,
                              dynamo_backend="inductor" if cfg.compile else "no")
    device = accelerator.device
    torch.manual_seed(0)
    model = build_model(cfg, VOC)  # random VOC-shaped batches below
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg.schedule, total_updates=1, warmup_updates=0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    step_args = dict(optimizer=optimizer, scheduler=scheduler, loss_fn=build_loss(cfg.loss, VOC).to(device),
                     accelerator=accelerator, channels_last=cfg.channels_last)
    return accelerator, model, step_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = TrainConfig(shards=str(args.shards), model=args.model, batch_size=args.batch_size,
                      image_size=args.image_size, augment=args.augment, mixed_precision=args.mixed_precision,
                      channels_last=args.channels_last, compile=args.compile, workers=args.workers, cpu=args.cpu)
    accelerator, model, step_args = prepared_step(cfg)
    device = accelerator.device

    # (a) one batch already on the device, every step
    images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8,
                           device=device)
    states = torch.randint(-1, 2, (cfg.batch_size, VOC.num_classes), dtype=torch.int8, device=device)
    model.train()
    model_steps = (train_step(model, images, states, **step_args) for _ in itertools.count())

    records = []
    for loader in args.loaders:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the previous loader's resident splits must not count here
        # (a) again right before each (b): on a shared machine the neighbours' load drifts over
        # minutes, and a ratio of two measurements taken far apart would measure the drift.
        reset_peak(device)
        model_only = cfg.batch_size * args.steps / timed(model_steps, args.warmup, args.steps, device)
        model_peak = peak_mb(device)
        # (b) the trainer's loop over the trainer's data source
        reset_peak(device)
        data, line = open_data(TrainConfig(**{**vars(cfg), "loader": loader}), accelerator)
        updates = train_updates(model, all_epochs(data), **step_args)
        try:
            end_to_end = cfg.batch_size * args.steps / timed(updates, args.warmup, args.steps, device)
        finally:
            updates.close()  # ends the stream's worker processes before the next loader starts
        records.append({
            "model": cfg.model, "loader": loader, "batch_size": cfg.batch_size, "image_size": cfg.image_size,
            "augment": cfg.augment, "mixed_precision": cfg.mixed_precision, "channels_last": cfg.channels_last,
            "compile": cfg.compile, "device": str(device), "workers": cfg.workers, "steps": args.steps,
            "warmup": args.warmup, "model_only_images_per_s": round(model_only, 1),
            "end_to_end_images_per_s": round(end_to_end, 1), "ratio": round(end_to_end / model_only, 3),
            "device_load_seconds": _rounded(getattr(data, "load_seconds", None)),  # DeviceData only
            "peak_gpu_memory_mb": peak_mb(device), "model_only_peak_gpu_memory_mb": model_peak,
            "loader_line": line,
        })
        del data, updates
    show(records, device)
    for record in records:
        print(json.dumps(record))
    if args.json_out:
        environment = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
                       else None, "threads": torch.get_num_threads()}
        args.json_out.write_text(json.dumps({"environment": environment, "records": records}, indent=1) + "\n")
    return 0


def show(records: list[dict], device: torch.device) -> None:
    first = records[0]
    table = Table(title=f"{first['model']}, batch {first['batch_size']} at {first['image_size']} px, "
                        f"{first['augment']}, {device}, precision {first['mixed_precision']}, channels_last "
                        f"{first['channels_last']}, compile {first['compile']}, {first['steps']} timed steps")
    columns: dict[str, Callable[[dict], str]] = {
        "loader": lambda r: r["loader"],
        "model only img/s": lambda r: f"{r['model_only_images_per_s']:.0f}",
        "end to end img/s": lambda r: f"{r['end_to_end_images_per_s']:.0f}",
        "ratio": lambda r: f"{r['ratio']:.2f}",
        "load s": lambda r: "-" if r["device_load_seconds"] is None else f"{r['device_load_seconds']:.1f}",
        "peak MB": lambda r: "-" if r["peak_gpu_memory_mb"] is None else f"{r['peak_gpu_memory_mb']:.0f}",
    }
    for name in columns:
        table.add_column(name, justify="left" if name == "loader" else "right")
    for record in records:
        table.add_row(*(cell(record) for cell in columns.values()))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
