"""A run once set up: what its epochs need, and the run's waits, each declared with its deadline.

`start` makes the Accelerator (joining the process group), claims --out and finds where a
--resume continues; `set_up` builds the model, the data, the recipe and the state. Every step
that waits on another process (a collective, a loader's next batch, a checkpoint save) is a
method here that declares its wait to the watchdog (trainer/faults/watchdog.py), so that the
story in trainer/main.py reads as the calls it makes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from torch.optim.swa_utils import AveragedModel

from models import describe
from shards.classes import ClassList, class_list
from shards.manifest import load_manifest
from shards.transforms import normalize
from trainer.config import ConfigError, TrainConfig, as_dict
from trainer.config.fields import lr_step_epochs
from trainer.data.choose import open_data
from trainer.data.stream import RunData
from trainer.evaluation.evaluate import EvalResult, evaluate_split
from trainer.faults.exits import Identity
from trainer.faults.signals import StopSignal
from trainer.faults.watchdog import Watchdog
from trainer.loop.progress import StartClock, TrainProgress
from trainer.recipe.ema import build_ema
from trainer.recipe.loss import auto_pos_weight, run_loss
from trainer.recipe.mixing import build_mixer
from trainer.recipe.network import build_model
from trainer.recipe.optim import build_optimizer, build_scheduler
from trainer.rundir import checkpoint
from trainer.rundir.checkpoint import RunState
from trainer.rundir.layout import RunDir
from trainer.rundir.lock import RunDirLock
from trainer.rundir.provenance import run_classes, same_classes
from trainer.rundir.resume import ResumePoint, open_run, resume_point
from trainer.loop.step import EpochSoFar, train_updates

# The process group's own timeout, past --hang-timeout: the watchdog, which says what hung, ends the
# wait first; the library's timeout (an exception in a thread that may be stuck in C) only backs it up.
GROUP_TIMEOUT_MARGIN_S = 60

Say = Callable[..., None]


@dataclass
class Run:
    """Everything the epochs of a run need, built by `set_up`."""

    cfg: TrainConfig
    accelerator: Accelerator
    watchdog: Watchdog
    stop: StopSignal
    say: Say  # a console line on the main process, nothing on the others
    progress: TrainProgress
    clock: StartClock
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    data: RunData
    ema: AveragedModel | None  # --ema-decay: the average of the weights (recipe/ema.py), else None
    state: RunState  # where training stands: the last epoch end, or a mid-epoch checkpoint's position
    started: float  # this lifetime's start moved back by the earlier lifetimes' time (summary wall_seconds)

    @property
    def classes(self) -> ClassList:
        """The data's class list: the model's logits, the columns of every score and table."""
        return self.data.classes

    @property
    def dir(self) -> RunDir:
        return RunDir(self.cfg.out)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def elapsed(self) -> float:
        return time.time() - self.started

    def updates(self, epoch: int, skip: int) -> Iterator[EpochSoFar]:
        """Train on this rank's batches of `epoch` after the first `skip`; yields after every update.
        Two declared waits: the loader's next batch, and the step around it (its gradient all-reduce)."""
        with self.watchdog.waiting("the train loader's workers to start", phase="train", epoch=epoch):
            source = self.data.train(epoch, skip)
        batches = self.watchdog.watch(source, "the next batch of the train loader", first=skip, phase="train",
                                      epoch=epoch)
        updates = train_updates(self.model, batches, optimizer=self.optimizer, scheduler=self.scheduler,
                                loss_fn=self.loss_fn, accelerator=self.accelerator, first_batch=skip,
                                channels_last=self.cfg.channels_last, mixer=build_mixer(self.cfg.mixup, self.cfg.cutmix),
                                clip_grad_norm=self.cfg.clip_grad_norm, ema=self.ema)
        return self.watchdog.watch(updates, "a training step (forward, backward, the gradient all-reduce)",
                                   first=skip // self.cfg.grad_accum, count="update", phase="train", epoch=epoch)

    def stop_agreed(self, **where: object) -> bool:
        """Collective: True on every rank when any rank has received a stop signal."""
        with self.watchdog.waiting("the stop-signal agreement with the other ranks (a collective)", **where):
            return self.stop.agreed(self.accelerator)

    def so_far(self, trained: EpochSoFar) -> RunState:
        """The run state after `trained.batch` batches of the next epoch (collective: sums the loss over
        ranks). `self.state` is the epoch's start, which a resumed epoch's partial sums are part of."""
        with self.watchdog.waiting("the sum of the train loss over the ranks (a collective)", batch=trained.batch):
            loss_sum = self.accelerator.reduce(trained.loss_sum.detach().clone(), "sum").item()
        return replace(self.state, step_in_epoch=trained.batch, partial_loss_sum=self.state.partial_loss_sum + loss_sum,
                       partial_seconds=self.state.partial_seconds + trained.seconds, wall_seconds=self.elapsed())

    def save(self, state: RunState) -> Path:
        """Collective: `state`'s checkpoint, written by every rank (rundir/checkpoint.py)."""
        with self.watchdog.waiting(f"checkpoint {state.name()} to be saved by every rank", phase="checkpoint"):
            return checkpoint.save_checkpoint(self.accelerator, self.dir.root, state, keep=self.cfg.keep_checkpoints)

    def save_best(self, epoch: int, val_map: float, ema: bool = False) -> None:
        """best/ from the model's weights or (`ema`) their average."""
        with self.watchdog.waiting("best/ to be saved (barriers of every rank)", phase="checkpoint", epoch=epoch):
            checkpoint.save_best(self.accelerator, self.ema.module if ema else self.model, self.dir.root, epoch=epoch,
                                 val_map=val_map, weights="ema" if ema else "model")

    def evaluate(self, split: str, epoch: int | None = None, ema: bool = False) -> EvalResult:
        """Collective: every image of `split` scored once across the ranks (trainer/evaluation/evaluate.py),
        by the model or (`ema`) by the average of its weights."""
        model = self.ema.module if ema else self.model
        tta = "none" if split == self.data.train_split else self.cfg.tta  # --tta: val and test only
        return evaluate_split(model, self.data, split, self.accelerator, self.loss_fn, watchdog=self.watchdog,
                              epoch=epoch, tta=tta)


def start(cfg: TrainConfig, earlier: dict, lock: RunDirLock, watchdog: Watchdog,
          clock: StartClock) -> tuple[Accelerator, TrainProgress, ResumePoint]:
    """The Accelerator (every process of the launch joins), --out claimed for this run, and where a
    --resume continues (the same on every rank; `earlier`: the run's config.yaml as --resume found
    it). Nothing is loaded or written yet."""
    group_timeout = timedelta(seconds=cfg.hang_timeout + GROUP_TIMEOUT_MARGIN_S) if cfg.hang_timeout > 0 else None
    with watchdog.waiting("every process of the launch to join the process group", phase="set-up"):
        accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
            log_with=None if cfg.log_with == "none" else cfg.log_with, project_dir=cfg.out,
            step_scheduler_with_optimizer=False,  # we step it once per real update: see recipe.optim.build_scheduler
            dynamo_backend="inductor" if cfg.compile else "no",  # Accelerate compiles the model in prepare
            kwargs_handlers=[InitProcessGroupKwargs(timeout=group_timeout)],
        )
    clock.mark("Accelerator")
    rank, world, run = accelerator.process_index, accelerator.num_processes, RunDir(cfg.out)
    watchdog.identify(Identity(rank=rank, world=world, main=accelerator.is_main_process, host=socket.gethostname()),
                      run.stacks(rank))
    with watchdog.waiting("the main process's claim of --out (a broadcast)", phase="set-up"):
        lock.claim(accelerator)  # one run per folder, before anything is written (trainer/rundir/lock.py)
    if cfg.debug and world > 1:
        raise ConfigError("--debug runs one process: start it with `python trainer/main.py --debug ...`")
    trained_with = earlier.get("world_size")
    if trained_with not in (None, world):  # each process restores its own RNG file and data split
        raise ConfigError(f"--resume: {cfg.out} was trained with {trained_with} process(es); resume it with "
                          f"{trained_with}, not {world}")
    progress = TrainProgress(enabled=accelerator.is_main_process)
    with watchdog.waiting("the main process's check of the checkpoints to resume from (a broadcast)", phase="set-up"):
        point = resume_point(accelerator, run.root, cfg.epochs) if cfg.resume else ResumePoint()
    for line in point.lines:
        progress.say(line)
    return accelerator, progress, point


def set_up(cfg: TrainConfig, accelerator: Accelerator, progress: TrainProgress, point: ResumePoint, *, earlier: dict,
           stop: StopSignal, watchdog: Watchdog, clock: StartClock, wall_start: float) -> Run:
    """Model, data, recipe and state (fresh, or the checkpoint `point` names), prepared for DDP."""
    torch.autograd.set_detect_anomaly(cfg.debug)
    set_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    say = progress.say
    # The class list first (a resumed run learns the classes it began with), then the model: one that
    # cannot take the input size fails before the data is loaded.
    classes = class_list(load_manifest(cfg.shards))
    mismatch = same_classes(run_classes(earlier), classes, f"--resume: the run in {cfg.out}", cfg.shards) \
        if earlier else None
    if mismatch:
        raise ConfigError(mismatch)
    with watchdog.waiting("the main process to build the model first (pretrained weights)", phase="set-up"), \
            accelerator.main_process_first():  # pretrained weights: the main process fetches/caches first
        model = build_model(cfg, classes)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:  # before the optimizer takes the parameters and before prepare wraps the model in DDP
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    clock.mark("model")
    with watchdog.waiting("the data to load (--loader: decoding onto the device, the decoded cache or another "
                          "process building it, or the shards' manifest)", phase="set-up"):
        data, loader_line = open_data(cfg, accelerator)
    clock.mark("data")
    say(loader_line)
    if not data.checksummed:
        say(f"[yellow]warning: {cfg.shards}/manifest.json has no sha256 checksums (packed by an older shards.pack): "
            "the shards cannot be verified; pack again to add them[/yellow]")

    # Loss, optimizer and schedule, counted in optimizer updates.
    positives, count = data.train_positives()
    pos_weight = auto_pos_weight(positives, count, classes) if cfg.pos_weight == "auto" else None
    loss_fn = run_loss(cfg, classes, pos_weight)
    optimizer = build_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                fused=accelerator.device.type == "cuda", head_lr_scale=cfg.head_lr_scale,
                                num_logits=classes.num_logits, no_decay_norm_bias=not cfg.decay_norm_bias)
    updates_per_epoch = data.batches // cfg.grad_accum
    scheduler = build_scheduler(optimizer, cfg.schedule, total_updates=updates_per_epoch * cfg.epochs,
                                warmup_updates=round(cfg.warmup_epochs * updates_per_epoch),
                                step_updates=tuple(e * updates_per_epoch for e in lr_step_epochs(cfg)),
                                gamma=cfg.lr_gamma)
    with watchdog.waiting("DDP set-up (rank 0's weights broadcast to every rank)", phase="set-up"):
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = build_ema(accelerator, model, cfg.ema_decay)  # before a checkpoint loads: it restores the average too

    with watchdog.waiting("the run's state to load (--resume) and its files to be written", phase="set-up"):
        state = open_run(accelerator, cfg.out, point.checkpoint, settings=as_dict(cfg), classes=classes,
                         earlier=earlier)
    if cfg.resume and point.checkpoint is None:
        say(f"--resume: no complete checkpoint in {RunDir(cfg.out).checkpoints}; starting fresh")
    if point.checkpoint is not None:
        say(f"resumed from {point.checkpoint} (epoch {state.epoch} done, {state.step_in_epoch} batches into the next)")
    clock.mark("prepare and resume")
    if cfg.log_with != "none":
        accelerator.init_trackers("voc-trainer", config={k: str(v) if v is None else v for k, v in as_dict(cfg).items()})
    say(f"{cfg.model}: {accelerator.num_processes} process(es) on {accelerator.device}, {data.batches} batches of "
        f"{cfg.batch_size} per process per epoch, mixed precision {cfg.mixed_precision}, output in {cfg.out}")
    if cfg.debug:
        print_debug_batch(say, accelerator.unwrap_model(model, keep_torch_compile=False), data, cfg.image_size,
                          accelerator.device)
    return Run(cfg=cfg, accelerator=accelerator, watchdog=watchdog, stop=stop, say=say, progress=progress, clock=clock,
               model=model, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn.to(accelerator.device),
               data=data, ema=ema, state=state, started=wall_start - state.wall_seconds)


def print_debug_batch(say: Say, model: torch.nn.Module, data: RunData, image_size: int, device: torch.device) -> None:
    """--debug: the layer table, then one batch (the train split's first, in the eval view: no RNG drawn)."""
    images, states, ids = next(iter(data.eval(data.train_split)[0]))
    say(describe(model, image_size=image_size))
    x = normalize(images.to(device))
    say(f"batch: images {tuple(images.shape)} {images.dtype} [{int(images.min())}, {int(images.max())}] -> "
        f"normalized [{x.min():.2f}, {x.max():.2f}]; states {tuple(states.shape)} {states.dtype} "
        f"values {sorted(set(states.flatten().tolist()))}; ids {ids[:4]}...")
    with torch.no_grad():
        logits = model(x)
    say(f"logits {tuple(logits.shape)} [{logits.min():.3f}, {logits.max():.3f}]")
