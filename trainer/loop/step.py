"""The training step, and an epoch as a stream of optimizer updates.

Distribution, mixed precision and gradient accumulation all come from the Accelerator:
the prepared model runs under autocast and syncs gradients (DDP); `accumulate` skips the
all-reduce and the optimizer step until the accumulation window closes; `backward` scales
the loss (fp16 grad scaler, 1/grad_accum).

`train_updates` yields after every optimizer update and leaves every decision (progress,
stop, checkpoint) to the loop in trainer/main.py, nanoGPT style: no callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn

from shards.transforms import normalize
from torch.optim.swa_utils import AveragedModel

from trainer.recipe.mixing import Mixer


def train_step(model: nn.Module, images: torch.Tensor, states: torch.Tensor, *, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module, accelerator: Accelerator,
               channels_last: bool = False, mixer: Mixer | None = None, clip_grad_norm: float = 0.0) -> torch.Tensor:
    """One micro-batch: normalize on the device, forward, backward, and update at the window's end.

    images: uint8 [B,3,S,S] on any device; states: int8 label states [B,C]; loss_fn: a recipe.loss.StatesLoss.
    clip_grad_norm: when > 0, the update uses the gradient rescaled to at most this global L2 norm.
    Returns the batch's mean loss as a detached device tensor (no host sync here).
    """
    with accelerator.accumulate(model):
        # uint8 crosses the host->device link (4x less than float); normalization runs on the device.
        inputs = normalize(images.to(accelerator.device, non_blocking=True))
        mixed = None
        if mixer is not None:  # mixup / cutmix: the loss mixes the targets alike
            inputs, mixed = mixer(inputs)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = model(inputs)
        # float32 loss even under autocast: bf16 log-sigmoid sums lose digits.
        loss = loss_fn(logits.float(), states.to(accelerator.device, non_blocking=True), mixed)
        accelerator.backward(loss)
        # Only once the window's gradients are summed (and all-reduced): a partial sum's norm means nothing.
        # Accelerate unscales fp16 gradients first, so the bound is on the true gradient.
        if clip_grad_norm and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()  # a no-op inside an accumulation window (AcceleratedOptimizer)
        if accelerator.sync_gradients:
            scheduler.step()  # the schedule counts real updates (step_scheduler_with_optimizer=False)
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@dataclass
class EpochSoFar:
    """This process's running totals over the batches it trained in this epoch, since it (re)started."""

    batch: int  # batches of the epoch done, counting those trained before a mid-epoch resume
    loss_sum: torch.Tensor  # sum of this process's per-batch mean losses, on the device (no host sync)
    seconds: float  # wall seconds of training


def train_updates(model: nn.Module, batches: Iterable, *, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module, accelerator: Accelerator,
                  first_batch: int = 0, channels_last: bool = False, mixer: Mixer | None = None,
                  clip_grad_norm: float = 0.0, ema: AveragedModel | None = None) -> Iterator[EpochSoFar]:
    """Train on `batches` (this rank's (images, states, ids)); yield after every optimizer update.

    Every rank yields at the same updates, so the caller may run collectives (stop agreement,
    checkpoint) between them. first_batch: batches of this epoch trained before a resume; the
    caller has already skipped them in `batches`, this only keeps the count absolute.
    clip_grad_norm: see train_step.
    """
    model.train()
    plain = None if ema is None else accelerator.unwrap_model(model, keep_torch_compile=False)
    so_far = EpochSoFar(first_batch, torch.zeros((), device=accelerator.device), 0.0)
    start = time.perf_counter()
    for images, states, _ids in batches:
        so_far.loss_sum += train_step(model, images, states, optimizer=optimizer, scheduler=scheduler,
                                      loss_fn=loss_fn, accelerator=accelerator, channels_last=channels_last,
                                      mixer=mixer, clip_grad_norm=clip_grad_norm)
        so_far.batch += 1
        so_far.seconds = time.perf_counter() - start
        if accelerator.sync_gradients:
            if ema is not None:  # after every real update, from this rank's (DDP-identical) weights
                ema.update_parameters(plain)
            yield so_far
