"""Train, evaluate and report: `accelerate launch trainer/main.py --shards DIR --model NAME --out RUN`.

Also runs as `python trainer/main.py ...` or `python -m trainer.main ...` (one process). The
script reads like nanoGPT's: set up, resume, then per epoch train -> evaluate -> keep best ->
checkpoint -> history row; at the end test with the final (and best) model and write the
reports. All distribution goes through the Accelerator; the webdataset loaders are NOT passed
to `prepare` (they split the shards by rank themselves, see docs/NOTES.md) but get the rank and
world size from it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from functools import partial
from itertools import islice
from pathlib import Path

if __package__ in (None, ""):  # `python trainer/main.py` / `accelerate launch trainer/main.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from models import create_model, describe
from shards.manifest import load_manifest
from shards.reader import eval_loader, steps_per_epoch, train_loader
from shards.transforms import normalize
from trainer import checkpoint, history
from trainer.checkpoint import RunState
from trainer.config import RUN_CONFIG, ConfigError, TrainConfig, as_dict, parse_config
from trainer.evaluate import evaluate
from trainer.finish import finish
from trainer.loop import EpochResult, train_one_epoch
from trainer.progress import TrainProgress
from trainer.provenance import read_run_config, write_run_config
from trainer.recipe import auto_pos_weight, build_loss, build_optimizer, build_scheduler
from trainer.signals import StopSignal, start_workers

DEBUG_BATCHES = 3  # per epoch and per evaluated split in --debug
STOP_CHECK_UPDATES = 4  # optimizer updates between stop-signal agreements (a collective + host sync each)
PROGRESS_EVERY = 10  # batches between progress-bar refreshes (each reads the loss: a host sync)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """Registry model with only the options the user set; checks it maps S x S images to 21 logits."""
    options = {"weights": cfg.weights} if cfg.weights else {}
    if cfg.freeze_features:
        options["freeze_features"] = True
    try:
        model = create_model(cfg.model, **options)
    except FileNotFoundError as err:  # pretrained weights not on this machine: the message says where to put them
        raise ConfigError(f"--weights: {err}") from err
    except ValueError as err:  # an option this model does not take, or an unreadable weights file
        raise ConfigError(f"--model {cfg.model}{f' --weights {cfg.weights}' if cfg.weights else ''}: {err}") from err
    model.eval()
    with torch.no_grad():  # one tiny forward now beats a shape error deep inside epoch 1
        try:
            out = model(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"--image-size {cfg.image_size}: model '{cfg.model}' cannot take "
                              f"{cfg.image_size}x{cfg.image_size} inputs (try 227): {err}") from err
    if out.shape != (1, 21):
        raise ConfigError(f"--model {cfg.model}: emits {tuple(out.shape)}, expected (1, 21) logits")
    return model.train()


def print_debug_batch(say, model: torch.nn.Module, batch: tuple, image_size: int, device: torch.device) -> None:
    images, states, ids = batch
    say(describe(model, image_size=image_size))
    x = normalize(images.to(device))
    say(f"batch: images {tuple(images.shape)} {images.dtype} [{int(images.min())}, {int(images.max())}] -> "
        f"normalized [{x.min():.2f}, {x.max():.2f}]; states {tuple(states.shape)} {states.dtype} "
        f"values {sorted(set(states.flatten().tolist()))}; ids {ids[:4]}...")
    with torch.no_grad():
        logits = model(x)
    say(f"logits {tuple(logits.shape)} [{logits.min():.3f}, {logits.max():.3f}]")


def train(cfg: TrainConfig) -> dict:
    """Run the whole training described by a validated config; returns the summary (every rank)."""
    # Stop signals are caught from the start: one that comes during set-up stops the run at the
    # first stop check with a checkpoint, instead of killing a process its peers wait for.
    with StopSignal() as stop:
        return _train(cfg, stop)


def _train(cfg: TrainConfig, stop: StopSignal) -> dict:
    wall_start = time.time()
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
        log_with=None if cfg.log_with == "none" else cfg.log_with, project_dir=cfg.out,
        step_scheduler_with_optimizer=False,  # we step it once per real update: see recipe.build_scheduler
    )
    if cfg.debug and accelerator.num_processes > 1:
        raise ConfigError("--debug runs one process: start it with `python trainer/main.py --debug ...`")
    trained_with = read_run_config(Path(cfg.out) / RUN_CONFIG).get("world_size") if cfg.resume else None
    if trained_with not in (None, accelerator.num_processes):  # each process restores its own RNG file and data split
        raise ConfigError(f"--resume: {cfg.out} was trained with {trained_with} process(es); resume it with "
                          f"{trained_with}, not {accelerator.num_processes}")
    torch.autograd.set_detect_anomaly(cfg.debug)
    set_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    run_dir, world = Path(cfg.out), accelerator.num_processes
    progress = TrainProgress(enabled=accelerator.is_main_process)
    # soft_wrap: log lines stay one line each in files and CI logs (rich wraps at 80 columns there)
    say = partial(progress.console.print, soft_wrap=True) if accelerator.is_main_process else (lambda *a, **k: None)
    manifest = load_manifest(cfg.shards)
    split_ids = {split: manifest["splits"][split]["ids"] for split in ("train", "val", "test")}

    # --- model, loss, optimizer, schedule
    with accelerator.main_process_first():  # pretrained weights: the main process fetches/caches first
        model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_split = manifest["splits"]["train"]
    pos_weight = auto_pos_weight(train_split["positives"], train_split["count"]) if cfg.pos_weight == "auto" else None
    loss_fn = build_loss(cfg.loss, pos_weight).to(accelerator.device)
    optimizer = build_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Batches per epoch per rank, cut to whole accumulation windows (an unfinished window would
    # leak its gradients into the next epoch and is not in any checkpoint).
    batches = steps_per_epoch(cfg.shards, batch_size=cfg.batch_size, world_size=world)
    batches = min(batches, DEBUG_BATCHES) if cfg.debug else batches
    if batches < cfg.grad_accum:
        raise ConfigError(f"--grad-accum {cfg.grad_accum}: an epoch has only {batches} batches per process")
    batches -= batches % cfg.grad_accum
    updates_per_epoch = batches // cfg.grad_accum
    scheduler = build_scheduler(optimizer, cfg.schedule, total_updates=updates_per_epoch * cfg.epochs,
                                warmup_updates=round(cfg.warmup_epochs * updates_per_epoch))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- fresh start or resume
    state, resumed_from = RunState(), None
    if cfg.resume:
        found = checkpoint.latest_checkpoint(run_dir)
        if found is None:
            say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting fresh")
        else:
            resumed_from = str(found[0])
            state = checkpoint.load_checkpoint(accelerator, found[0])
            say(f"resumed from {found[0]} (epoch {state.epoch} done, {state.step_in_epoch} batches into the next)")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run_dir / RUN_CONFIG, as_dict(cfg), world_size=world, device=str(accelerator.device),
                         resumed_from=resumed_from)
        history.rewrite(run_dir / "history.csv", state.history)  # exactly the epochs the checkpoint holds
    if cfg.log_with != "none":
        accelerator.init_trackers("voc-trainer", config={k: str(v) if v is None else v for k, v in as_dict(cfg).items()})
    say(f"{cfg.model}: {world} process(es) on {accelerator.device}, {batches} batches of {cfg.batch_size} per "
        f"process per epoch, mixed precision {cfg.mixed_precision}, output in {run_dir}")

    def loader(split: str, epoch: int | None = None):
        """This rank's batches, workers started (shielded from stop signals: trainer/signals.py)."""
        common = dict(batch_size=cfg.batch_size, rank=accelerator.process_index, world_size=world,
                      num_workers=0 if cfg.debug else cfg.workers, image_size=cfg.image_size)
        if epoch is not None:
            return start_workers(train_loader(cfg.shards, seed=cfg.seed, epoch=epoch, preset=cfg.augment, **common))
        return start_workers(eval_loader(cfg.shards, split=split, **common))

    def run_eval(split: str):
        if not cfg.debug:
            return evaluate(model, loader(split), accelerator, expected_ids=split_ids[split], loss_fn=loss_fn, split=split)
        kept = list(islice(loader(split), DEBUG_BATCHES))
        return evaluate(model, kept, accelerator, expected_ids=[i for b in kept for i in b[2]], loss_fn=loss_fn, split=split)

    # --- epochs
    with progress:
        def stop_agreed() -> bool:  # collective: any rank signalled -> every rank stops here
            if stop.received is not None:
                accelerator.set_trigger()
            return accelerator.check_trigger()

        def save_partial(done: int, result: EpochResult, epoch_start: float) -> None:
            # Per-rank partial sums become global ones; a resumed epoch adds its own to these.
            loss_sum = accelerator.reduce(result.loss_sum.detach().clone(), "sum").item()
            part = replace(state, step_in_epoch=done, partial_loss_sum=state.partial_loss_sum + loss_sum,
                           partial_batches=state.partial_batches + result.batches * world,
                           partial_images=state.partial_images + result.images * world,
                           partial_seconds=state.partial_seconds + time.time() - epoch_start)
            path = checkpoint.save_checkpoint(accelerator, run_dir, part, keep=cfg.keep_checkpoints)
            say(f"checkpoint {path}")

        first_epoch = state.epoch + 1
        for epoch in range(first_epoch, cfg.epochs + 1):
            epoch_start, skip = time.time(), state.step_in_epoch
            data = islice(loader("train", epoch), skip, batches)  # order = f(seed, epoch, rank): skip what was trained
            if cfg.debug:
                data = list(data)
            if cfg.debug and epoch == first_epoch:
                print_debug_batch(say, accelerator.unwrap_model(model), data[0], cfg.image_size, accelerator.device)
            progress.start_epoch(epoch, cfg.epochs, batches, skip)
            epoch_lr = scheduler.get_last_lr()[0]  # the rate the epoch starts with (cosine moves it every update)

            def after_update(done: int, result: EpochResult) -> bool:
                update = done // cfg.grad_accum  # updates done in this epoch, the same on every rank
                # The stop agreement is a collective with a host sync: every few updates, not every one.
                if update % STOP_CHECK_UPDATES == 0 and stop_agreed():
                    save_partial(done, result, epoch_start)
                    say(f"stopped by {stop.received.name if stop.received else 'another process'}; "
                        "resume with --resume")
                    return True
                periodic = cfg.checkpoint_every_steps and ((epoch - 1) * updates_per_epoch + update) % cfg.checkpoint_every_steps == 0
                if periodic and done < batches:  # the epoch-end checkpoint covers the last update
                    save_partial(done, result, epoch_start)
                return False

            def on_batch(done: int, result: EpochResult) -> None:
                if progress.live and (done % PROGRESS_EVERY == 0 or done == batches):  # .item() syncs the device
                    progress.update(done, result.loss_sum.item() / result.batches, result.images * world / result.seconds)

            result = train_one_epoch(model, data, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                                     accelerator=accelerator, first_batch=skip, channels_last=cfg.channels_last,
                                     after_update=after_update, on_batch=on_batch)
            if result.stopped:
                accelerator.end_training()
                return {"stopped": True, "epoch": epoch}

            # Mean train loss over every batch of every rank (including any before a resume).
            loss_sum = accelerator.reduce(result.loss_sum.detach().clone(), "sum").item() + state.partial_loss_sum
            train_loss = loss_sum / (result.batches * world + state.partial_batches)
            images = result.images * world + state.partial_images
            train_seconds = result.seconds + state.partial_seconds
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": None, "val_map": None, "train_map": None,
                   "lr": epoch_lr, "images_per_s": images / max(train_seconds, 1e-9)}

            if epoch == 1 or epoch % cfg.test_frequency == 0 or epoch == cfg.epochs:
                val, train_eval = run_eval("val"), run_eval("train")
                row.update(val_loss=val.loss, val_map=val.metrics["map"], train_map=train_eval.metrics["map"])
                if val.metrics["map"] is not None and (state.best_val_map is None or val.metrics["map"] > state.best_val_map):
                    # best/ before the checkpoint: a kill in between redoes this epoch, which rewrites best/.
                    checkpoint.save_best(accelerator, model, run_dir, epoch=epoch, val_map=val.metrics["map"])
                    state.best_val_map, state.best_epoch = val.metrics["map"], epoch
            row["seconds"] = time.time() - epoch_start + state.partial_seconds

            state = RunState(epoch=epoch, best_val_map=state.best_val_map, best_epoch=state.best_epoch,
                             history=[*state.history, row])
            checkpoint.save_checkpoint(accelerator, run_dir, state, keep=cfg.keep_checkpoints)
            if accelerator.is_main_process:
                history.rewrite(run_dir / "history.csv", state.history)  # only now that its checkpoint exists
            accelerator.log({k: v for k, v in row.items() if v is not None and k != "epoch"}, step=epoch)
            say(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if v is not None))
            if stop_agreed():
                say(f"stopped by {stop.received.name if stop.received else 'another process'} after the epoch's "
                    "checkpoint; resume with --resume")
                accelerator.end_training()
                return {"stopped": True, "epoch": epoch}

    summary = finish(cfg, accelerator, model, state, run_eval=run_eval, say=say, console=progress.console,
                     wall_seconds=time.time() - wall_start)
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse, then train. Exit status: 0 done or stopped by a signal (checkpoint saved), 2 bad settings."""
    try:
        train(parse_config(argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
