"""End of a run: test with the final model (and the best-val one if it differs), write the outputs.

The test split is scored with the final weights first, then with their average when the run
keeps one (--ema-decay); then, when the best-val-mAP epoch is not the last one,
best/model.safetensors is loaded and the test split scored again. submission.csv and
per_class_ap.csv come from the weights --test-with names (default final); summary.json says
which (`submission_model`, `submission_weights`: model or ema), and holds every test mAP. Test labels hidden (the split was packed
without annotations): only the model that writes submission.csv is scored, and there is no test
metric, AP table or per_class_ap.csv.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.evaluation.evaluate import EvalResult
from trainer.loop.run import Run, Say
from trainer.rundir import checkpoint, outputs, plots
from trainer.rundir.checkpoint import RunState
from trainer.rundir.layout import PER_CLASS_AP, STATE_FILE, SUBMISSION, RunDir

METRIC = ("test_map: sklearn average_precision_score per class, mean over classes with positives; "
          "test_map_voc07: 11-point interpolated as the VOC devkit's Python ports, difficult-only "
          "images ignored; test_thresholded / test_top3: CP, CR, CF1, OP, OR, OF1 of the predictions "
          "score >= 0.5 / each image's 3 highest scores (docs/training.md, Metrics)")
NO_METRIC = ("no test metric: the test split was packed without annotations (labels hidden); "
             "submission.csv holds the scores to hand in")


@dataclass
class Tested:
    """The test split scored by the models of a run's end."""

    labeled: bool
    used_name: str  # "final", "best" or "ema": the weights that write submission.csv
    final: EvalResult | None
    best: EvalResult | None
    ema: EvalResult | None = None  # the final average of the weights (--ema-decay)

    @property
    def used(self) -> EvalResult:
        return {"final": self.final, "best": self.best, "ema": self.ema}[self.used_name]


def test_and_write_outputs(run: Run) -> dict:
    """Collective (every rank evaluates its share); only the main process writes files. Returns the summary."""
    tested = test_models(run)
    summary = summarize(run, tested)
    if run.accelerator.is_main_process:
        write_outputs(run, tested, summary)
    if tested.labeled:
        run.accelerator.log({"test_map": tested.used.metrics["map"]}, step=run.cfg.epochs)
    return summary


def test_models(run: Run) -> Tested:
    """Score the test split with the final model and, when it differs and is needed, the best-val one."""
    labeled = run.data.is_labeled("test")
    best_usable = _best_is_usable(run.dir, run.state, run.say)
    if run.cfg.test_with == "best" and not best_usable:
        run.say("--test-with best: the best-val model is the final one (or unknown); using the final model")
    used_name = "best" if run.cfg.test_with == "best" and best_usable else \
        "ema" if run.cfg.test_with == "ema" else "final"
    final = run.evaluate("test") if labeled or used_name == "final" else None
    ema = run.evaluate("test", ema=True) if run.ema is not None and (labeled or used_name == "ema") else None
    best = None
    if best_usable and (labeled or used_name == "best"):
        checkpoint.load_best(run.accelerator, run.model, run.dir.root)
        best = run.evaluate("test")
    return Tested(labeled, used_name, final, best, ema)


def _best_is_usable(run_dir: RunDir, state: RunState, say: Say) -> bool:
    """best/ must hold the epoch the run state names (a kill between the two saves can part them)."""
    if state.best_epoch is None or (state.best_epoch == state.epoch and state.best_weights == "model"):
        return False  # the final weights themselves
    try:
        saved = json.loads((run_dir.best / STATE_FILE).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        saved = None
    if saved != state.best_epoch:
        say(f"[yellow]best/ holds epoch {saved}, the run's best is epoch {state.best_epoch}: "
            "testing the final model only[/yellow]")
        return False
    return True


def _test_block(result: EvalResult) -> dict:
    """The test figures of one model; all None when the test labels are hidden."""
    metrics = result.metrics or {"map": None, "map_voc07": None, "missing": None, "thresholded": None, "top3": None}
    return {"test_map": metrics["map"], "test_map_voc07": metrics["map_voc07"], "test_loss": result.loss,
            "missing_classes": metrics["missing"], "test_thresholded": metrics["thresholded"],
            "test_top3": metrics["top3"]}


def summarize(run: Run, tested: Tested) -> dict:
    """summary.json's contents."""
    cfg, state, used, labeled = run.cfg, run.state, tested.used, tested.labeled
    skipped = run.data.skipped_at_pack["test"]
    rates = [row["images_per_s"] for row in state.history if row.get("images_per_s")]
    longest_s, longest_what = run.watchdog.longest
    return {
        "model": cfg.model,
        "epochs": cfg.epochs,
        "world_size": run.world,
        "mixed_precision": cfg.mixed_precision,
        "debug": cfg.debug,
        # the data it learned from and selected with; val_split "none": no best/, best_val_* null
        "train_splits": cfg.train_splits,
        "val_split": cfg.val_split,
        "tta": cfg.tta,  # how the val and test scores were made (trainer/evaluation/tta.py)
        "test_labeled": labeled,
        **_test_block(used),
        "submission_model": tested.used_name,
        "submission_weights": run.state.best_weights if tested.used_name == "best" else
        "ema" if tested.used_name == "ema" else "model",
        "submission_epoch": state.best_epoch if tested.used_name == "best" else state.epoch,
        "submission_rows": len(used.ids),
        "test_skipped_at_pack": {"count": len(skipped), "ids": skipped},
        "per_class_ap": dict(zip(run.classes.names, used.metrics["ap"])) if labeled else None,
        "per_class_ap_voc07": dict(zip(run.classes.names, used.metrics["ap_voc07"])) if labeled else None,
        "final_model": None if tested.final is None else _test_block(tested.final),
        "best_model": None if tested.best is None else {"epoch": state.best_epoch, "weights": state.best_weights,
                                                        **_test_block(tested.best)},
        "ema_model": None if tested.ema is None else {"decay": cfg.ema_decay, **_test_block(tested.ema)},
        "best_val_map": state.best_val_map,
        "best_val_epoch": state.best_epoch,
        # every process lifetime of the run up to its checkpoints, plus this one's test
        "wall_seconds": run.elapsed(),
        # training throughput of all processes together, mean over epochs (evaluation not counted)
        "images_per_s": sum(rates) / len(rates) if rates else None,
        # the main process's longest single declared wait in this process lifetime, against --hang-timeout
        "longest_wait": {"seconds": round(longest_s, 3), "what": longest_what, "hang_timeout": cfg.hang_timeout},
        "metric": METRIC if labeled else NO_METRIC,
    }


def write_outputs(run: Run, tested: Tested, summary: dict) -> None:
    """The result files (main process), then what the console says of them."""
    cfg, used, say, out = run.cfg, tested.used, run.say, run.dir
    outputs.write_submission(out / SUBMISSION, used.ids, used.scores, run.classes.names)
    if tested.labeled:
        outputs.write_per_class_ap(out / PER_CLASS_AP, used.metrics)
    plots.plot_history(run.state.history, out.root, title=plot_title(out.root, cfg.model, summary["test_map"]))
    outputs.write_summary(out.summary, summary)
    if tested.labeled:
        run.progress.console.print(outputs.ap_table(used.metrics, title=f"Test AP, {tested.used_name} model ({cfg.model})"))
    else:
        say(f"test labels hidden (manifest): submission.csv holds scores for {len(used.ids)} images; no test metric")
    if tested.labeled:
        others = {"final": tested.final, "best-val": tested.best, "EMA": tested.ema}
        for name, other in others.items():
            if other is not None and other is not used:
                say(f"test mAP of the {name} model: {other.metrics['map']:.4f}")
    skipped = run.data.skipped_at_pack["test"]
    if skipped:
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        say(f"[yellow]submission.csv has {len(skipped)} fewer rows than the test list: ids "
            f"{', '.join(skipped[:10])}{more} were skipped at pack time (manifest.json 'skipped')[/yellow]")
    if cfg.debug:
        say(f"[yellow]--debug: the test metrics and submission.csv cover only {len(used.ids)} test images")
    if run.watchdog.timeout > 0:
        say(f"longest single wait: {run.watchdog.longest[0]:.1f} s ({run.watchdog.longest[1]}), "
            f"--hang-timeout {cfg.hang_timeout:g} s")
    say(f"outputs in {out.root}: summary.json, submission.csv ({tested.used_name} model), "
        f"{'per_class_ap.csv, ' if tested.labeled else ''}history.csv, loss.png, map.png, config.yaml, checkpoints/")


def plot_title(run_dir: Path, model: str, test_map: float | None) -> str:
    """What a plot handed in on its own must say: which run, which model, how it did."""
    result = "test labels hidden" if test_map is None else f"test mAP {test_map:.4f}"
    return f"{run_dir.name} ({model}), {result}"
