"""Train, evaluate and report: `accelerate launch trainer/main.py --shards DIR --model NAME --out RUN`.

Also runs as `python trainer/main.py ...`, `python -m trainer.main ...` or `voc-train ...` (one
process). `train` reads top to bottom like nanoGPT's train.py: set up, resume, then per epoch
train (the loop sees every optimizer update and decides about progress, stops and
checkpoints) -> evaluate -> keep best -> checkpoint -> history row; at the end test with the
final (and best) model and write the outputs. All distribution goes through the Accelerator;
the data source gets the rank and world size from it (trainer/data/stream.py).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed

from models import describe
from shards.transforms import normalize
from trainer.rundir import checkpoint
from trainer.rundir import outputs
from trainer.faults.agreement import agree
from trainer.rundir.atomic import atomic_write_texts
from trainer.rundir.checkpoint import RunState
from trainer.config import ConfigError, TrainConfig, as_dict, parse_config
from trainer.config.yaml_files import RUN_CONFIG, read_run_record
from trainer.data.stream import RunData
from trainer.data.device import open_data
from trainer.evaluation.evaluate import evaluate_split
from trainer.faults.exits import Identity, RunFault, as_fault, say_error
from trainer.evaluation.final_test import test_and_write_outputs
from trainer.rundir.finished import finished_run
from trainer.step import EpochSoFar, train_updates
from trainer.recipe.network import build_model
from trainer.progress import TrainProgress
from trainer.rundir.provenance import run_config_text
from trainer.recipe.loss import auto_pos_weight, build_loss
from trainer.recipe.optim import build_optimizer, build_scheduler
from trainer.rundir.resume import resume_point
from trainer.rundir.lock import RunDirLock
from trainer.faults.signals import StopSignal
from trainer.progress import StartClock
from trainer.faults.watchdog import Watchdog

IMPORTED_AT = time.time()  # the start: line's first phase ends here (trainer/progress.py)

STOP_CHECK_UPDATES = 4  # optimizer updates between stop-signal agreements (a collective + host sync each)
PROGRESS_EVERY = 10  # updates between progress-bar refreshes (each reads the loss: a host sync)
# The process group's own timeout, past --hang-timeout: the watchdog, which says what hung, ends the
# wait first; the library's timeout (an exception in a thread that may be stuck in C) only backs it up.
GROUP_TIMEOUT_MARGIN_S = 60


def print_debug_batch(say: Callable[..., None], model: torch.nn.Module, data: RunData, image_size: int, device: torch.device) -> None:
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


def mid_epoch_state(state: RunState, so_far: EpochSoFar, accelerator: Accelerator, wall_seconds: float,
                    watchdog: Watchdog) -> RunState:
    """The run state after `so_far.batch` batches of the next epoch (collective: sums the loss over ranks).
    `state` is the epoch's start, which a resumed epoch's partial sums are already part of."""
    with watchdog.waiting("the sum of the train loss over the ranks (a collective)", batch=so_far.batch):
        loss_sum = accelerator.reduce(so_far.loss_sum.detach().clone(), "sum").item()
    return replace(state, step_in_epoch=so_far.batch, partial_loss_sum=state.partial_loss_sum + loss_sum,
                   partial_seconds=state.partial_seconds + so_far.seconds, wall_seconds=wall_seconds)


def start_or_resume(cfg: TrainConfig, accelerator: Accelerator, say: Callable[..., None]) -> RunState:
    """A fresh RunState, or the newest intact checkpoint loaded (--resume; damaged ones are skipped
    and named: trainer/rundir/resume.py); then the run's config.yaml and its history.csv with
    exactly the epochs that state holds, both or neither (a full disk changes nothing)."""
    run_dir, state, resumed_from = Path(cfg.out), RunState(), None
    found = resume_point(accelerator, run_dir, say) if cfg.resume else None
    if cfg.resume and found is None:
        say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting fresh")
    if found is not None:
        resumed_from = str(found)
        state = checkpoint.load_checkpoint(accelerator, found)
        say(f"resumed from {found} (epoch {state.epoch} done, {state.step_in_epoch} batches into the next)")
    error = None
    if accelerator.is_main_process:
        try:
            record = run_config_text(run_dir, as_dict(cfg), world_size=accelerator.num_processes,
                                     device=str(accelerator.device), resumed_from=resumed_from)
            atomic_write_texts({run_dir / RUN_CONFIG: record, run_dir / "history.csv": outputs.history_text(state.history)})
        except Exception as err:  # OSError naming the file (trainer/rundir/atomic.py); every rank must hear of it
            error = err
    agree(accelerator, error, f"writing {run_dir / RUN_CONFIG}")
    return state


def stop_agreed(stop: StopSignal, accelerator: Accelerator, watchdog: Watchdog, **where: object) -> bool:
    """StopSignal.agreed (a collective) as a declared wait."""
    with watchdog.waiting("the stop-signal agreement with the other ranks (a collective)", **where):
        return stop.agreed(accelerator)


def train(cfg: TrainConfig) -> dict:
    """Run the whole training described by a validated config; returns the summary (every rank).
    A fault after launch is said in one line and raised as trainer.faults.exits.RunFault (its exit status)."""
    # Stop signals are caught from the start: one that comes during set-up stops the run at the
    # first stop check with a checkpoint, instead of killing a process its peers wait for.
    with StopSignal() as stop, RunDirLock(cfg.out) as run_dir_lock, Watchdog(cfg.hang_timeout) as watchdog:
        try:
            return _train(cfg, stop, run_dir_lock, watchdog)
        except Exception as err:
            fault = as_fault(err, watchdog.identity)
            if fault is None:
                raise  # a bug: its traceback is the report
            if fault.line:  # said here, while a launcher's SIGTERM is still only recorded by the stop handler
                say_error(fault.line)
            raise fault from err


def _train(cfg: TrainConfig, stop: StopSignal, run_dir_lock: RunDirLock, watchdog: Watchdog) -> dict:
    wall_start = time.time()
    clock = StartClock(IMPORTED_AT)
    group_timeout = timedelta(seconds=cfg.hang_timeout + GROUP_TIMEOUT_MARGIN_S) if cfg.hang_timeout > 0 else None
    with watchdog.waiting("every process of the launch to join the process group", phase="set-up"):
        accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
            log_with=None if cfg.log_with == "none" else cfg.log_with, project_dir=cfg.out,
            step_scheduler_with_optimizer=False,  # we step it once per real update: see recipe.build_scheduler
            dynamo_backend="inductor" if cfg.compile else "no",  # Accelerate compiles the model in prepare
            kwargs_handlers=[InitProcessGroupKwargs(timeout=group_timeout)],
        )
    clock.mark("Accelerator")
    watchdog.identify(Identity(rank=accelerator.process_index, world=accelerator.num_processes,
                               main=accelerator.is_main_process, host=socket.gethostname()), Path(cfg.out))
    with watchdog.waiting("the main process's claim of --out (a broadcast)", phase="set-up"):
        run_dir_lock.claim(accelerator)  # one run per folder, before anything is written (trainer/rundir/lock.py)
    run_dir, world = Path(cfg.out), accelerator.num_processes
    if cfg.debug and world > 1:
        raise ConfigError("--debug runs one process: start it with `python trainer/main.py --debug ...`")
    trained_with = read_run_record(run_dir).get("world_size") if cfg.resume else None
    if trained_with not in (None, world):  # each process restores its own RNG file and data split
        raise ConfigError(f"--resume: {cfg.out} was trained with {trained_with} process(es); resume it with "
                          f"{trained_with}, not {world}")
    torch.autograd.set_detect_anomaly(cfg.debug)
    set_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    progress = TrainProgress(enabled=accelerator.is_main_process)
    # soft_wrap: log lines stay one line each in files and CI logs (rich wraps at 80 columns there)
    say = (lambda *a: progress.console.print(*a, soft_wrap=True)) if accelerator.is_main_process else (lambda *a: None)
    with watchdog.waiting("the main process's check whether the run is finished (a broadcast)", phase="set-up"):
        finished = finished_run(accelerator, run_dir, cfg.epochs) if cfg.resume else None
    if finished:  # before anything is loaded or written (trainer/rundir/finished.py)
        say(finished)
        end_training(accelerator, watchdog)
        return {"finished": True, "epoch": cfg.epochs}
    # --- model (first: a model that cannot take the input size fails before the data is loaded)
    with watchdog.waiting("the main process to build the model first (pretrained weights)", phase="set-up"), \
            accelerator.main_process_first():  # pretrained weights: the main process fetches/caches first
        model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    clock.mark("model")

    # --- data: streamed from the shards every epoch, or decoded once onto the device (--loader)
    with watchdog.waiting("the data to load (--loader: decoding onto the device, the decoded cache or another "
                          "process building it, or the shards' manifest)",
                          phase="set-up"):
        data, loader_line = open_data(cfg, accelerator)
    clock.mark("data")
    say(loader_line)
    if not data.checksummed:
        say(f"[yellow]warning: {cfg.shards}/manifest.json has no sha256 checksums (packed by an older shards.pack): "
            "the shards cannot be verified; pack again to add them[/yellow]")

    # --- loss, optimizer, schedule (counted in optimizer updates)
    positives, count = data.train_positives()
    loss_fn = build_loss(cfg.loss, auto_pos_weight(positives, count) if cfg.pos_weight == "auto" else None)
    loss_fn = loss_fn.to(accelerator.device)
    optimizer = build_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                fused=accelerator.device.type == "cuda")
    updates_per_epoch = data.batches // cfg.grad_accum
    scheduler = build_scheduler(optimizer, cfg.schedule, total_updates=updates_per_epoch * cfg.epochs,
                                warmup_updates=round(cfg.warmup_epochs * updates_per_epoch))
    with watchdog.waiting("DDP set-up (rank 0's weights broadcast to every rank)", phase="set-up"):
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- fresh start or resume
    with watchdog.waiting("the run's state to load (--resume) and its files to be written", phase="set-up"):
        state = start_or_resume(cfg, accelerator, say)
    clock.mark("prepare and resume")
    # The run's clock: this lifetime's start moved back by the earlier lifetimes' time (summary wall_seconds).
    run_start = wall_start - state.wall_seconds
    if cfg.log_with != "none":
        accelerator.init_trackers("voc-trainer", config={k: str(v) if v is None else v for k, v in as_dict(cfg).items()})
    say(f"{cfg.model}: {world} process(es) on {accelerator.device}, {data.batches} batches of {cfg.batch_size} per "
        f"process per epoch, mixed precision {cfg.mixed_precision}, output in {run_dir}")
    if cfg.debug:
        print_debug_batch(say, accelerator.unwrap_model(model, keep_torch_compile=False), data, cfg.image_size,
                          accelerator.device)

    with progress:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            # --- train: this rank's batches; a mid-epoch checkpoint's batches are skipped
            epoch_start, skip = time.time(), state.step_in_epoch
            epoch_lr = scheduler.get_last_lr()[0]  # the rate the epoch starts with (cosine moves it every update)
            progress.start_epoch(epoch, cfg.epochs, data.batches, skip)
            so_far, stopped = None, False
            # Two declared waits: the loader's next batch, and the step around it (its gradient all-reduce).
            with watchdog.waiting("the train loader's workers to start", phase="train", epoch=epoch):
                source = data.train(epoch, skip)
            batches = watchdog.watch(source, "the next batch of the train loader", first=skip, phase="train",
                                     epoch=epoch)
            updates = train_updates(model, batches, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                                    accelerator=accelerator, first_batch=skip, channels_last=cfg.channels_last)
            for so_far in watchdog.watch(updates, "a training step (forward, backward, the gradient all-reduce)",
                                         first=skip // cfg.grad_accum, count="update", phase="train", epoch=epoch):
                update = so_far.batch // cfg.grad_accum  # updates done in this epoch, the same on every rank
                if (start_line := clock.first_step()) is not None:
                    say(start_line)
                if progress.live and (update % PROGRESS_EVERY == 0 or so_far.batch == data.batches):
                    images_per_s = (so_far.batch - skip) * cfg.batch_size * world / max(so_far.seconds, 1e-9)
                    progress.update(so_far.batch, so_far.loss_sum.item() / (so_far.batch - skip), images_per_s)
                # The stop agreement is a collective with a host sync: every few updates, not every one.
                # Not on the epoch's last update: the epoch-end check below stops there, after the
                # epoch's own checkpoint (a 'mid-epoch' one at its end would resume into no batches).
                stopped = update % STOP_CHECK_UPDATES == 0 and so_far.batch < data.batches and \
                    stop_agreed(stop, accelerator, watchdog, phase="train", epoch=epoch, batch=so_far.batch)
                periodic = bool(cfg.checkpoint_every_steps) and \
                    ((epoch - 1) * updates_per_epoch + update) % cfg.checkpoint_every_steps == 0
                if stopped or (periodic and so_far.batch < data.batches):  # the epoch's end has its own
                    part = mid_epoch_state(state, so_far, accelerator, time.time() - run_start, watchdog)
                    with watchdog.waiting(f"checkpoint {part.name()} to be saved by every rank", phase="checkpoint"):
                        path = checkpoint.save_checkpoint(accelerator, run_dir, part, keep=cfg.keep_checkpoints)
                    say(f"checkpoint {path}")
                if stopped:
                    break
            if stopped:
                say(f"stopped by {stop.name()}; resume with --resume")
                end_training(accelerator, watchdog)
                return {"stopped": True, "epoch": epoch}
            if so_far is None or so_far.batch != data.batches:
                raise RuntimeError(f"epoch {epoch}: the train loader gave {0 if so_far is None else so_far.batch} of "
                                   f"{data.batches} batches on process {accelerator.process_index}")

            # Mean train loss over every batch of every rank (those before a resume included).
            trained = mid_epoch_state(state, so_far, accelerator, time.time() - run_start, watchdog)
            row = {"epoch": epoch, "train_loss": trained.partial_loss_sum / (data.batches * world), "val_loss": None,
                   "val_map": None, "train_map": None, "lr": epoch_lr,
                   "images_per_s": data.batches * cfg.batch_size * world / max(trained.partial_seconds, 1e-9)}

            # --- evaluate at epoch 1, every --test-frequency epochs and the last; keep the best
            if epoch == 1 or epoch % cfg.test_frequency == 0 or epoch == cfg.epochs:
                # --val-split none: no val figures and no best/ (the final model is the one tested)
                val = None if cfg.val_split == "none" else \
                    evaluate_split(model, data, cfg.val_split, accelerator, loss_fn, watchdog=watchdog, epoch=epoch)
                train_eval = evaluate_split(model, data, data.train_split, accelerator, loss_fn, watchdog=watchdog,
                                            epoch=epoch)
                row.update(train_map=train_eval.metrics["map"])
                val_map = None if val is None else val.metrics["map"]
                if val is not None:
                    row.update(val_loss=val.loss, val_map=val_map)
                if val_map is not None and (state.best_val_map is None or val_map > state.best_val_map):
                    # best/ before the checkpoint: a kill in between redoes this epoch, which rewrites best/.
                    with watchdog.waiting("best/ to be saved (barriers of every rank)", phase="checkpoint", epoch=epoch):
                        checkpoint.save_best(accelerator, model, run_dir, epoch=epoch, val_map=val_map)
                    state.best_val_map, state.best_epoch = val_map, epoch
            row["seconds"] = time.time() - epoch_start + state.partial_seconds

            # --- checkpoint, then the history row (only now that its checkpoint exists)
            state = RunState(epoch=epoch, wall_seconds=time.time() - run_start, best_val_map=state.best_val_map,
                             best_epoch=state.best_epoch, history=[*state.history, row])
            with watchdog.waiting(f"checkpoint {state.name()} to be saved by every rank", phase="checkpoint"):
                checkpoint.save_checkpoint(accelerator, run_dir, state, keep=cfg.keep_checkpoints)
            if accelerator.is_main_process:
                outputs.write_history(run_dir / "history.csv", state.history)
            accelerator.log({k: v for k, v in row.items() if v is not None and k != "epoch"}, step=epoch)
            say(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if v is not None))
            if stop_agreed(stop, accelerator, watchdog, phase="epoch end", epoch=epoch):
                say(f"stopped by {stop.name()} after the epoch's checkpoint; resume with --resume")
                end_training(accelerator, watchdog)
                return {"stopped": True, "epoch": epoch}

    summary = test_and_write_outputs(cfg, accelerator, model, state, data=data, loss_fn=loss_fn, say=say,
                                     console=progress.console, wall_seconds=time.time() - run_start,
                                     watchdog=watchdog)
    end_training(accelerator, watchdog)
    return summary


def end_training(accelerator: Accelerator, watchdog: Watchdog) -> None:
    with watchdog.waiting("the other ranks to end the run (trackers, process group)", phase="end"):
        accelerator.end_training()


def main(argv: list[str] | None = None) -> int:
    """Parse, then train. Exit status (trainer/faults/exits.py): 0 done or stopped by a signal (checkpoint
    saved), 1 a peer failed, 2 bad input, 74 I/O error, 124 a wait passed --hang-timeout."""
    try:
        cfg = parse_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        train(cfg)
    except RunFault as fault:  # its line is said
        return fault.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
