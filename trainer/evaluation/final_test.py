"""End of a run: test with the final model (and the best-val one if it differs), write the outputs.

The test split is scored with the final weights first; then, when the best-val-mAP epoch is
not the last one, best/model.safetensors is loaded and the test split scored again.
submission.csv and per_class_ap.csv come from the model --test-with names (default final);
summary.json says which, and holds both test mAPs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from accelerate import Accelerator
from rich.console import Console
from torch import nn

from shards.classes import CLASSES
from trainer.rundir import checkpoint
from trainer.rundir import outputs
from trainer.rundir import plots
from trainer.rundir.checkpoint import RunState
from trainer.config import TrainConfig
from trainer.data.stream import RunData
from trainer.evaluation.evaluate import UNWATCHED, EvalResult, evaluate_split
from trainer.faults.watchdog import Watchdog


def _best_is_usable(run_dir: Path, state: RunState, say: Callable) -> bool:
    """best/ must hold the epoch the run state names (a kill between the two saves can part them)."""
    if state.best_epoch is None or state.best_epoch == state.epoch:
        return False
    try:
        saved = json.loads((run_dir / "best" / checkpoint.STATE_FILE).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        saved = None
    if saved != state.best_epoch:
        say(f"[yellow]best/ holds epoch {saved}, the run's best is epoch {state.best_epoch}: "
            "testing the final model only[/yellow]")
        return False
    return True


def _test_block(result: EvalResult) -> dict:
    """The test figures of one model; all None when the test labels are hidden."""
    metrics = result.metrics or {"map": None, "map_voc07": None, "missing": None}
    return {"test_map": metrics["map"], "test_map_voc07": metrics["map_voc07"], "test_loss": result.loss,
            "missing_classes": metrics["missing"]}


def test_and_write_outputs(cfg: TrainConfig, accelerator: Accelerator, model: nn.Module, state: RunState, *,
                           data: RunData, loss_fn: torch.nn.Module, say: Callable, console: Console,
                           wall_seconds: float, watchdog: Watchdog = UNWATCHED) -> dict:
    """Collective (every rank evaluates its share); only the main process writes files. Returns the summary.

    Test labels hidden (the split was packed without annotations): only the model that writes
    submission.csv is scored, and there is no test metric, AP table or per_class_ap.csv.
    """
    run_dir, labeled = Path(cfg.out), data.is_labeled("test")
    start = time.time()
    best_usable = _best_is_usable(run_dir, state, say)
    if cfg.test_with == "best" and not best_usable:
        say("--test-with best: the best-val model is the final one (or unknown); using the final model")
    used_name = "best" if cfg.test_with == "best" and best_usable else "final"
    final = evaluate_split(model, data, "test", accelerator, loss_fn, watchdog=watchdog) \
        if labeled or used_name == "final" else None
    best = None
    if best_usable and (labeled or used_name == "best"):
        checkpoint.load_best(accelerator, model, run_dir)
        best = evaluate_split(model, data, "test", accelerator, loss_fn, watchdog=watchdog)
    used = best if used_name == "best" else final
    skipped = data.skipped_at_pack["test"]

    history = state.history
    rates = [row["images_per_s"] for row in history if row.get("images_per_s")]
    summary = {
        "model": cfg.model,
        "epochs": cfg.epochs,
        "world_size": accelerator.num_processes,
        "mixed_precision": cfg.mixed_precision,
        "debug": cfg.debug,
        # the data it learned from and selected with; val_split "none": no best/, best_val_* null
        "train_splits": cfg.train_splits,
        "val_split": cfg.val_split,
        "test_labeled": labeled,
        **_test_block(used),
        "submission_model": used_name,
        "submission_epoch": state.best_epoch if used_name == "best" else state.epoch,
        "submission_rows": len(used.ids),
        "test_skipped_at_pack": {"count": len(skipped), "ids": skipped},
        "per_class_ap": dict(zip(CLASSES, used.metrics["ap"])) if labeled else None,
        "per_class_ap_voc07": dict(zip(CLASSES, used.metrics["ap_voc07"])) if labeled else None,
        "final_model": None if final is None else _test_block(final),
        "best_model": None if best is None else {"epoch": state.best_epoch, **_test_block(best)},
        "best_val_map": state.best_val_map,
        "best_val_epoch": state.best_epoch,
        # every process lifetime of the run up to its checkpoints, plus this one's test
        "wall_seconds": wall_seconds + time.time() - start,
        # training throughput of all processes together, mean over epochs (evaluation not counted)
        "images_per_s": sum(rates) / len(rates) if rates else None,
        # the main process's longest single declared wait in this process lifetime, against --hang-timeout
        "longest_wait": {"seconds": round(watchdog.longest[0], 3), "what": watchdog.longest[1],
                         "hang_timeout": cfg.hang_timeout},
        "metric": ("test_map: sklearn average_precision_score per class, mean over classes with positives; "
                   "test_map_voc07: 11-point interpolated as the VOC devkit's Python ports, difficult-only "
                   "images ignored") if labeled else
                  "no test metric: the test split was packed without annotations (labels hidden); "
                  "submission.csv holds the scores to hand in",
    }
    if accelerator.is_main_process:
        outputs.write_submission(run_dir / "submission.csv", used.ids, used.scores)
        if labeled:
            outputs.write_per_class_ap(run_dir / "per_class_ap.csv", used.metrics)
        plots.plot_history(history, run_dir, title=plot_title(run_dir, cfg.model, summary["test_map"]))
        outputs.write_summary(run_dir / "summary.json", summary)
        if labeled:
            console.print(outputs.ap_table(used.metrics, title=f"Test AP, {used_name} model ({cfg.model})"))
        else:
            say(f"test labels hidden (manifest): submission.csv holds scores for {len(used.ids)} images; no test metric")
        if labeled and best is not None:
            other = final if used is best else best
            say(f"test mAP of the {'final' if used is best else 'best-val'} model: {other.metrics['map']:.4f}")
        if skipped:
            more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            say(f"[yellow]submission.csv has {len(skipped)} fewer rows than the test list: ids "
                f"{', '.join(skipped[:10])}{more} were skipped at pack time (manifest.json 'skipped')[/yellow]")
        if cfg.debug:
            say(f"[yellow]--debug: the test metrics and submission.csv cover only {len(used.ids)} test images")
        if watchdog.timeout > 0:
            say(f"longest single wait: {watchdog.longest[0]:.1f} s ({watchdog.longest[1]}), "
                f"--hang-timeout {cfg.hang_timeout:g} s")
        say(f"outputs in {run_dir}: summary.json, submission.csv ({used_name} model), "
            f"{'per_class_ap.csv, ' if labeled else ''}history.csv, loss.png, map.png, config.yaml, checkpoints/")
    if labeled:
        accelerator.log({"test_map": used.metrics["map"]}, step=cfg.epochs)
    return summary


def plot_title(run_dir: Path, model: str, test_map: float | None) -> str:
    """What a plot handed in on its own must say: which run, which model, how it did."""
    result = "test labels hidden" if test_map is None else f"test mAP {test_map:.4f}"
    return f"{run_dir.name} ({model}), {result}"
