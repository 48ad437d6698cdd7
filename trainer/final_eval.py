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
from trainer import checkpoint, outputs, plots
from trainer.checkpoint import RunState
from trainer.config import TrainConfig
from trainer.data import ShardStream
from trainer.evaluate import EvalResult, evaluate_split


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
    return {"test_map": result.metrics["map"], "test_map_voc07": result.metrics["map_voc07"],
            "test_loss": result.loss, "missing_classes": result.metrics["missing"]}


def test_and_write_outputs(cfg: TrainConfig, accelerator: Accelerator, model: nn.Module, state: RunState, *,
                           data: ShardStream, loss_fn: torch.nn.Module, say: Callable, console: Console,
                           wall_seconds: float) -> dict:
    """Collective (every rank evaluates its share); only the main process writes files. Returns the summary."""
    run_dir = Path(cfg.out)
    start = time.time()
    final = evaluate_split(model, data, "test", accelerator, loss_fn)
    best = None
    if _best_is_usable(run_dir, state, say):
        checkpoint.load_best(accelerator, model, run_dir)
        best = evaluate_split(model, data, "test", accelerator, loss_fn)
    used_name = "best" if cfg.test_with == "best" and best is not None else "final"
    if cfg.test_with == "best" and best is None:
        say("--test-with best: the best-val model is the final one (or unknown); using the final model")
    used = best if used_name == "best" else final

    history = state.history
    rates = [row["images_per_s"] for row in history if row.get("images_per_s")]
    summary = {
        "model": cfg.model,
        "epochs": cfg.epochs,
        "world_size": accelerator.num_processes,
        "mixed_precision": cfg.mixed_precision,
        "debug": cfg.debug,
        **_test_block(used),
        "submission_model": used_name,
        "submission_epoch": state.best_epoch if used_name == "best" else state.epoch,
        "per_class_ap": dict(zip(CLASSES, used.metrics["ap"])),
        "per_class_ap_voc07": dict(zip(CLASSES, used.metrics["ap_voc07"])),
        "final_model": _test_block(final),
        "best_model": None if best is None else {"epoch": state.best_epoch, **_test_block(best)},
        "best_val_map": state.best_val_map,
        "best_val_epoch": state.best_epoch,
        "wall_seconds": wall_seconds + time.time() - start,
        # training throughput of all processes together, mean over epochs (evaluation not counted)
        "images_per_s": sum(rates) / len(rates) if rates else None,
        "metric": "test_map: sklearn average_precision_score per class, mean over classes with positives; "
                  "test_map_voc07: 11-point interpolated, difficult-only images ignored",
    }
    if accelerator.is_main_process:
        outputs.write_submission(run_dir / "submission.csv", used.ids, used.scores)
        outputs.write_per_class_ap(run_dir / "per_class_ap.csv", used.metrics)
        plots.plot_history(history, run_dir)
        outputs.write_summary(run_dir / "summary.json", summary)
        console.print(outputs.ap_table(used.metrics, title=f"Test AP, {used_name} model ({cfg.model})"))
        if best is not None:
            other = final if used is best else best
            say(f"test mAP of the {'final' if used is best else 'best-val'} model: {other.metrics['map']:.4f}")
        if cfg.debug:
            say(f"[yellow]--debug: the test metrics and submission.csv cover only {len(used.ids)} test images")
        say(f"outputs in {run_dir}: summary.json, submission.csv ({used_name} model), per_class_ap.csv, "
            "history.csv, loss.png, map.png, config.yaml, checkpoints/")
    accelerator.log({"test_map": used.metrics["map"]}, step=cfg.epochs)
    return summary
