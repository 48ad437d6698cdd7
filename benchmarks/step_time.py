"""Step time of the trainer's step vs a bare PyTorch loop: same model, same in-memory batch.

    python benchmarks/step_time.py [--model final] [--batch-size 16] [--image-size 227] [--steps 15]

The trainer side is `trainer.loop.step.train_step` under a real Accelerator (accumulate context,
AcceleratedOptimizer/Scheduler, loss through `accelerator.backward`); the bare side is the
five lines every PyTorch tutorial has. Both normalize the uint8 batch on the device and use the
same optimizer. Steps alternate between the two so that a noisy neighbour on a shared machine
hurts both alike; the median step times are compared. Goal: overhead within 10%.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from accelerate import Accelerator

from models import create_model
from shards.classes import VOC
from shards.transforms import normalize
from trainer.loop.step import train_step
from trainer.recipe.loss import build_loss, logit_targets
from trainer.recipe.optim import build_optimizer, build_scheduler


def time_one(step, sync) -> float:
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="final")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--steps", type=int, default=15, help="timed steps of each kind")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    args = parser.parse_args(argv)

    accelerator = Accelerator(mixed_precision=args.mixed_precision, step_scheduler_with_optimizer=False)
    device = accelerator.device
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8)
    states = torch.randint(-1, 2, (args.batch_size, VOC.num_classes), dtype=torch.int8)
    base = create_model(args.model)

    # trainer: exactly the objects trainer/main.py builds
    model = copy.deepcopy(base)
    optimizer = build_optimizer(model, "adam", lr=1e-4, momentum=0.0, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "none", total_updates=1, warmup_updates=0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = build_loss("multilabel_soft_margin", VOC).to(device)

    def trainer_step() -> None:
        train_step(model, images, states, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                   accelerator=accelerator)

    # bare PyTorch on its own copy of the same weights
    bare = copy.deepcopy(base).to(device).train()
    bare_opt = torch.optim.Adam(bare.parameters(), lr=1e-4)
    bare_loss = torch.nn.MultiLabelSoftMarginLoss()
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)

    def bare_step() -> None:
        x = normalize(images.to(device))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = bare(x)
        loss = bare_loss(logits.float(), logit_targets(states.to(device), VOC.first_logit))
        loss.backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in (trainer_step, bare_step):  # warm-up: allocator, kernels, optimizer state
        step()
        step()
    # Steps alternate one by one and the median is compared: on a shared box the neighbours' load
    # drifts over seconds, which alternating cancels and the median ignores.
    times = {"trainer": [], "bare": []}
    for _ in range(args.steps):
        times["trainer"].append(time_one(trainer_step, sync))
        times["bare"].append(time_one(bare_step, sync))
    trainer_s, bare_s = statistics.median(times["trainer"]), statistics.median(times["bare"])
    print(f"{args.model}, batch {args.batch_size} at {args.image_size}px, {device}, mixed precision "
          f"{args.mixed_precision}, {torch.get_num_threads()} threads, median of {args.steps} alternating steps")
    print(f"bare PyTorch loop: {bare_s * 1000:8.1f} ms/step  {args.batch_size / bare_s:7.1f} img/s")
    print(f"trainer train_step: {trainer_s * 1000:7.1f} ms/step  {args.batch_size / trainer_s:7.1f} img/s")
    print(f"overhead: {100 * (trainer_s / bare_s - 1):+.1f}% (goal: within 10%)")


if __name__ == "__main__":
    main()
