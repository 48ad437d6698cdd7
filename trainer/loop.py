"""The training step and the epoch loop: plain functions with explicit arguments.

Distribution, mixed precision and gradient accumulation all come from the Accelerator:
the prepared model runs under autocast and syncs gradients (DDP); `accumulate` skips the
all-reduce and the optimizer step until the accumulation window closes; `backward` scales
the loss (fp16 grad scaler, 1/grad_accum).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn

from shards.transforms import normalize
from trainer.evaluate import logit_targets


def train_step(model: nn.Module, images: torch.Tensor, states: torch.Tensor, *, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module, accelerator: Accelerator,
               channels_last: bool = False) -> torch.Tensor:
    """One micro-batch: normalize on the device, forward, backward, and update at the window's end.

    images: uint8 [B,3,S,S] on any device; states: int8 devkit states [B,20].
    Returns the batch's mean loss as a detached device tensor (no host sync here).
    """
    with accelerator.accumulate(model):
        # uint8 crosses the host->device link (4x less than float); normalization runs on the device.
        inputs = normalize(images.to(accelerator.device, non_blocking=True))
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = model(inputs)
        # float32 loss even under autocast: bf16 log-sigmoid sums lose digits.
        loss = loss_fn(logits.float(), logit_targets(states.to(accelerator.device, non_blocking=True)))
        accelerator.backward(loss)
        optimizer.step()  # a no-op inside an accumulation window (AcceleratedOptimizer)
        if accelerator.sync_gradients:
            scheduler.step()  # the schedule counts real updates (step_scheduler_with_optimizer=False)
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@dataclass
class EpochResult:
    """This process's share of one (possibly partial) pass over the batches."""

    loss_sum: torch.Tensor  # sum of per-batch mean losses, on the device
    batches: int
    images: int
    seconds: float
    stopped: bool  # True when `after_update` asked to stop before the batches ran out


# after_update(batches_done_in_epoch, result_so_far) -> True to stop here. Called on every rank
# after every optimizer update, so it may run collectives (checkpoint, stop-signal agreement).
AfterUpdate = Callable[[int, EpochResult], bool]
# on_batch(batches_done_in_epoch, result_so_far): progress display; must not run collectives.
OnBatch = Callable[[int, EpochResult], None]


def train_one_epoch(model: nn.Module, batches: Iterable, *, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module, accelerator: Accelerator,
                    first_batch: int = 0, channels_last: bool = False, after_update: AfterUpdate | None = None,
                    on_batch: OnBatch | None = None) -> EpochResult:
    """Train on `batches` (this rank's (images, states, ids) triples).

    first_batch: how many batches of this epoch were trained before (mid-epoch resume); the
    caller has already skipped them in `batches`, this only keeps the batch count absolute.
    """
    model.train()
    result = EpochResult(torch.zeros((), device=accelerator.device), 0, 0, 0.0, False)
    start = time.perf_counter()
    for images, states, _ids in batches:
        loss = train_step(model, images, states, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                          accelerator=accelerator, channels_last=channels_last)
        result.loss_sum += loss
        result.batches += 1
        result.images += images.shape[0]
        result.seconds = time.perf_counter() - start
        done = first_batch + result.batches
        if on_batch is not None:
            on_batch(done, result)
        if accelerator.sync_gradients and after_update is not None and after_update(done, result):
            result.stopped = True
            break
    result.seconds = time.perf_counter() - start
    return result
