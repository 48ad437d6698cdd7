"""Train, evaluate and report: `accelerate launch trainer/main.py --shards DIR --model NAME --out RUN`.

Also runs as `python trainer/main.py ...`, `python -m trainer.main ...` or `voc-train ...` (one
process). `_train` is the story of a run: start (the Accelerator, the run's folder, where a
resume continues), set up (model, data, recipe, state), then per epoch train, evaluate and
checkpoint, and at the end test and write the result files. Everything a step of it waits for
is declared with a deadline inside the Run it calls (trainer/loop/run.py), and a fault becomes an
exit status in `train` (trainer/faults/exits.py; docs/faults.md lists them).
"""

from __future__ import annotations

import sys
import time

from trainer.config import ConfigError, TrainConfig
from trainer.config.parse import parse_run
from trainer.config.yaml_files import read_run_record
from trainer.evaluation.evaluate import NonFiniteScores
from trainer.loop.diverge import LossWatch, not_finite, weights_finite
from trainer.loop.final_test import test_and_write_outputs
from trainer.loop.host_memory import keep_freed_memory
from trainer.faults.exits import EXIT_LAUNCHER_GONE, RunFault, as_fault, say_error
from trainer.faults.launcher import LauncherWatch, launcher_pid
from trainer.faults.signals import StopSignal
from trainer.faults.watchdog import Watchdog
from trainer.loop.progress import StartClock
from trainer.rundir import outputs
from trainer.rundir.checkpoint import RunState
from trainer.rundir.lock import RunDirLock
from trainer.rundir.outputs import EpochRow
from trainer.loop.run import Run, set_up, start

IMPORTED_AT = time.time()  # the start: line's first phase ends here (trainer/loop/progress.py)

STOP_CHECK_UPDATES = 4  # optimizer updates between stop-signal agreements (a collective + host sync each)
PROGRESS_EVERY = 10  # updates between progress-bar refreshes (each reads the loss: a host sync)


def train(cfg: TrainConfig, earlier: dict | None = None) -> dict:
    """Run the whole training described by a validated config; returns the summary (every rank).
    `earlier`: the run's config.yaml as --resume found it (trainer.config.parse_run), read here when
    not given. A fault after launch is said in one line and raised as RunFault (its exit status)."""
    # Stop signals are caught, and the launcher watched, from the start: a stop during set-up stops
    # the run at the first stop check with a checkpoint, instead of killing a process its peers wait for.
    launcher = LauncherWatch(launcher_pid())
    keep_freed_memory()  # before anything is loaded: every step reuses the last one's memory (host_memory.py)
    with StopSignal(launcher=launcher) as stop, RunDirLock(cfg.out) as lock, Watchdog(cfg.hang_timeout) as watchdog:
        try:
            if earlier is None:
                earlier = read_run_record(cfg.out) if cfg.resume else {}
            return _train(cfg, earlier, stop, lock, watchdog)
        except Exception as err:
            fault = as_fault(err, watchdog.identity)
            if fault is None:
                raise  # a bug: its traceback is the report
            if fault.line:  # said here, while a launcher's SIGTERM is still only recorded by the stop handler
                say_error(fault.line)
            raise fault from err


def _train(cfg: TrainConfig, earlier: dict, stop: StopSignal, lock: RunDirLock, watchdog: Watchdog) -> dict:
    wall_start, clock = time.time(), StartClock(IMPORTED_AT)
    accelerator, progress, point = start(cfg, earlier, lock, watchdog, clock)
    if point.finished:  # before anything is loaded or written
        progress.say(point.finished)
        summary = {"finished": True, "epoch": cfg.epochs}
    else:
        run = set_up(cfg, accelerator, progress, point, earlier=earlier, stop=stop, watchdog=watchdog, clock=clock,
                     wall_start=wall_start)
        summary = train_epochs(run) or test_and_write_outputs(run)
    with watchdog.waiting("the other ranks to end the run (trackers, process group)", phase="end"):
        accelerator.end_training()
    return summary


def train_epochs(run: Run) -> dict | None:
    """Every epoch left: train, evaluate, checkpoint. None when all are done; when a stop (a signal,
    the launcher gone) ended the run after its checkpoint, what the run returns instead of a summary."""
    with run.progress:
        for epoch in range(run.state.epoch + 1, run.cfg.epochs + 1):
            epoch_start = time.time()
            row = train_epoch(run, epoch)
            if row is None:
                return run.stop.summary(epoch)
            if epoch == 1 or epoch % run.cfg.test_frequency == 0 or epoch == run.cfg.epochs:
                evaluate_epoch(run, epoch, row)
            row.seconds = time.time() - epoch_start + run.state.partial_seconds
            save_epoch(run, row)
            if run.stop_agreed(phase="epoch end", epoch=epoch):
                run.say(run.stop.line(f"epoch {epoch}", epoch_end=True))
                return run.stop.summary(epoch)
    return None


def train_epoch(run: Run, epoch: int) -> EpochRow | None:
    """This rank's batches of `epoch` (a mid-epoch checkpoint's are skipped), as the start of the
    epoch's history row; None when a stop ended the epoch (after a checkpoint, said here)."""
    cfg, data, skip = run.cfg, run.data, run.state.step_in_epoch
    lr = run.scheduler.get_last_lr()[0]  # the rate the epoch starts with (cosine moves it every update)
    run.progress.start_epoch(epoch, cfg.epochs, data.batches, skip)
    trained, watch, rate = None, LossWatch(run.accelerator.device), lr
    for trained in run.updates(epoch, skip):
        update = trained.batch // cfg.grad_accum  # updates done in this epoch, the same on every rank
        watch.see(trained.loss_sum, update, rate, run.accelerator)  # on the device: no host sync
        rate = run.scheduler.get_last_lr()[0]
        if (start_line := run.clock.first_step()) is not None:
            run.say(start_line)
        if run.progress.live and (update % PROGRESS_EVERY == 0 or trained.batch == data.batches):
            images_per_s = (trained.batch - skip) * cfg.batch_size * run.world / max(trained.seconds, 1e-9)
            run.progress.update(trained.batch, trained.loss_sum.item() / (trained.batch - skip), images_per_s)
        # The stop agreement is a collective with a host sync: every few updates, not every one.
        # Not on the epoch's last update: the epoch-end check stops there, after the epoch's own
        # checkpoint (a 'mid-epoch' one at its end would resume into no batches).
        mid_epoch = trained.batch < data.batches
        stopped = mid_epoch and update % STOP_CHECK_UPDATES == 0 and \
            run.stop_agreed(phase="train", epoch=epoch, batch=trained.batch)
        periodic = bool(cfg.checkpoint_every_steps) and \
            ((epoch - 1) * (data.batches // cfg.grad_accum) + update) % cfg.checkpoint_every_steps == 0
        if stopped or (periodic and mid_epoch):  # the epoch's end has its own
            state = run.so_far(trained)  # a diverged rank raised the stop flag: its loss makes this sum not finite
            check_finite(run, watch, state, epoch, update, trained.batch)
            run.say(f"checkpoint {run.save(state)}")
        if stopped:
            run.say(run.stop.line(f"epoch {epoch}, update {update}", epoch_end=False))
            return None
    if trained is None or trained.batch != data.batches:
        raise RuntimeError(f"epoch {epoch}: the train loader gave {0 if trained is None else trained.batch} of "
                           f"{data.batches} batches on process {run.accelerator.process_index}")
    state = run.so_far(trained)
    check_finite(run, watch, state, epoch, data.batches // cfg.grad_accum, trained.batch)  # before evaluating, saving
    return EpochRow(epoch=epoch, train_loss=state.partial_loss_sum / (data.batches * run.world), lr=lr,
                    images_per_s=data.batches * cfg.batch_size * run.world / max(state.partial_seconds, 1e-9))


def check_finite(run: Run, watch: LossWatch, state: RunState, epoch: int, update: int, batch: int) -> None:
    """Diverged on every rank when the loss summed over the ranks, or the weights, are not finite."""
    with run.watchdog.waiting("every rank's first non-finite update (a gather)", phase="train", epoch=epoch):
        watch.check(state.partial_loss_sum, run.accelerator, run.cfg.out, epoch)
    if not weights_finite(run.model):
        raise not_finite("the weights are", epoch, update, state.partial_loss_sum / (batch * run.world),
                         watch.lrs[update], run.cfg.out)


def evaluate_epoch(run: Run, epoch: int, row: EpochRow) -> None:
    """Val and train mAP into `row` (and the EMA's val mAP); a better val mAP than any before, of the
    model or its average, saves best/ (--val-split none: no val figures and no best/, the final
    weights are the ones tested)."""
    try:
        val = None if run.cfg.val_split == "none" else run.evaluate(run.cfg.val_split, epoch)
        row.train_map = run.evaluate(run.data.train_split, epoch).metrics["map"]
        ema_val = run.evaluate(run.cfg.val_split, epoch, ema=True) if val is not None and run.ema is not None else None
    except NonFiniteScores as err:  # the same gathered scores on every rank: every rank raises
        update = run.data.batches // run.cfg.grad_accum
        raise not_finite(f"the {err.split} scores are", epoch, update, row.train_loss, row.lr, run.cfg.out) from err
    if val is None:
        return
    row.val_loss, row.val_map = val.loss, val.metrics["map"]
    if ema_val is not None:
        row.ema_val_map = ema_val.metrics["map"]
    candidates = [(row.val_map, False), (row.ema_val_map, True)]
    # The model wins a tie: max keeps the first of equal keys.
    val_map, ema = max(((m, e) for m, e in candidates if m is not None), key=lambda c: c[0], default=(None, False))
    best = run.state.best_val_map
    if val_map is not None and (best is None or val_map > best):
        # best/ before the checkpoint: a kill in between redoes this epoch, which rewrites best/.
        run.save_best(epoch, val_map, ema=ema)
        run.state.best_val_map, run.state.best_epoch = val_map, epoch
        run.state.best_weights = "ema" if ema else "model"


def save_epoch(run: Run, row: EpochRow) -> None:
    """The epoch's checkpoint, then its history row (only now that the checkpoint exists)."""
    state = run.state
    run.state = RunState(epoch=row.epoch, wall_seconds=run.elapsed(), best_val_map=state.best_val_map,
                         best_epoch=state.best_epoch, best_weights=state.best_weights,
                         history=[*state.history, row.as_dict()])
    run.save(run.state)
    if run.accelerator.is_main_process:
        outputs.write_history(run.dir.history, run.state.history)
    run.accelerator.log({k: v for k, v in row.as_dict().items() if v is not None and k != "epoch"}, step=row.epoch)
    run.say(row.line())


def main(argv: list[str] | None = None) -> int:
    """Parse, then train; the exit status says how the run ended (docs/faults.md)."""
    try:
        cfg, earlier = parse_run(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(cfg, earlier)
    except RunFault as fault:  # its line is said
        return fault.status
    return EXIT_LAUNCHER_GONE if summary.get("launcher_gone") else 0


if __name__ == "__main__":
    sys.exit(main())
