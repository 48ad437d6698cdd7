"""Evaluate a trained run's weights on one split of its shards, without training.

  python -m trainer.evaluate_run --run RUN [--weights best|final|CHECKPOINT_DIR] [--split val|test]
                                 [--shards DIR] [--out DIR] [--batch-size N] [--workers N] [--tta none|flip] [--cpu]

One process (GPU when there is one; --cpu). The network, image size, precision, loss and batch
size are the run's (RUN/config.yaml); the weights as in trainer.predict: best/ (default, when
the run has it), final (the newest end-of-epoch checkpoint) or a checkpoint directory. The split
(default test) of the run's shards, or of --shards, is scored with trainer.evaluation.evaluate.evaluate,
every image once, so `final` on test gives the test mAP the run reported for its final model
and `best` the one of its best-val model. Writes into --out (default RUN/eval-<weights>-<split>/):
per_class_ap.csv, submission.csv (test only) and summary.json (map, map_voc07, the thresholded and
top-3 CP..OF1, loss, missing classes, which weights and epoch, split, image count, tta), and prints
the AP table. --tta defaults to the run's setting, so the run's own test figures come out again.

Refused with exit status 2 and one "error:" line: a RUN without config.yaml, missing weights,
shards of another class list than the run's, a split the shards lack, and a split packed without labels (scoring needs them; for scores
only, run trainer.predict on the image files).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from torch import nn

from shards.classes import ClassList, class_list
from shards.manifest import ManifestError, is_labeled, load_manifest, split_entry
from shards.reader import eval_loader
from trainer.faults.usage import OneLineParser, refuse
from trainer.data.choose import default_workers
from trainer.rundir import outputs
from trainer.evaluation.evaluate import EvalResult, NonFiniteScores, evaluate
from trainer.evaluation.tta import TTA_CHOICES
from trainer.recipe.loss import auto_pos_weight, run_loss
from trainer.tools.run_model import WEIGHT_CHOICES, RunModel, open_run, run_settings
from trainer.config import ConfigError, TrainConfig
from trainer.config.fields import train_split_names
from trainer.rundir.layout import PER_CLASS_AP, SUBMISSION, SUMMARY
from trainer.rundir.provenance import same_classes


def labeled_split(cfg: TrainConfig, shards: str | None, split: str) -> tuple[Path, dict]:
    """(shards folder, manifest) when `split` is there with labels; ConfigError otherwise."""
    folder = Path(shards or cfg.shards)
    where = f"--shards {folder}" if shards else f"the run's shards {folder} (from its config.yaml; --shards DIR " \
                                                f"if they are elsewhere now)"
    try:
        manifest = load_manifest(folder)
        entry = split_entry(manifest, split, folder)
    except ManifestError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not is_labeled(entry):
        raise ConfigError(f"--split {split}: split '{split}' of {folder} was packed without annotations (labels "
                          "hidden) and scoring needs labels; for its scores alone run python -m trainer.predict "
                          "--run RUN IMAGES... --out CSV on its image files")
    if not entry["count"]:
        raise ConfigError(f"--split {split}: split '{split}' of {folder} has no images")
    return folder, manifest


def evaluation_loss(cfg: TrainConfig, classes: ClassList, manifest: dict) -> nn.Module | None:
    """The run's loss (None when --pos-weight auto cannot be rebuilt: the shards have no labeled train split)."""
    if cfg.pos_weight != "auto":
        return run_loss(cfg, classes)
    try:  # the splits the run trained on, as the trainer counted their positives
        train = split_entry(manifest, "+".join(train_split_names(cfg)), cfg.shards)
    except ManifestError:
        return None
    if not is_labeled(train):
        return None
    return run_loss(cfg, classes, auto_pos_weight(train["positives"], train["count"], classes))


def summary_block(run: RunModel, result: EvalResult, *, split: str, shards: Path, run_dir: Path,
                  precision: str, device: str, tta: str = "none") -> dict:
    """Like the trainer's test block (trainer.loop.final_test), for any split, plus which weights."""
    metrics = result.metrics
    return {
        "run": str(run_dir), "model": run.cfg.model, "weights": run.weights.label,
        "weights_file": str(run.weights.path), "epoch": run.weights.epoch, "split": split, "shards": str(shards),
        "images": len(result.ids), "map": metrics["map"], "map_voc07": metrics["map_voc07"],
        "thresholded": metrics["thresholded"], "top3": metrics["top3"], "tta": tta, "loss": result.loss,
        "missing_classes": metrics["missing"], "per_class_ap": dict(zip(run.classes.names, metrics["ap"])),
        "per_class_ap_voc07": dict(zip(run.classes.names, metrics["ap_voc07"])), "mixed_precision": precision,
        "device": device,
        "metric": "map: sklearn average_precision_score per class, mean over classes with positives; "
                  "map_voc07: 11-point interpolated, difficult-only images ignored; thresholded / top3: CP, CR, "
                  "CF1, OP, OR, OF1 of the predictions score >= 0.5 / each image's 3 highest scores",
    }



def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m trainer.evaluate_run", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a training run's --out (holds config.yaml)")
    parser.add_argument("--weights", metavar="WEIGHTS", help=f"{WEIGHT_CHOICES} (default: best if the run has it, "
                                                             "else final)")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="split to score (default test)")
    parser.add_argument("--shards", metavar="DIR", help="shards to read (default: the run's)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default RUN/eval-<weights>-<split>)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per forward (default: the run's)")
    parser.add_argument("--workers", type=int, metavar="N", help="data-loading workers (default: the run's)")
    parser.add_argument("--tta", choices=TTA_CHOICES, help="flip: average each image's and its mirror's "
                                                           "probabilities (default: the run's --tta)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 when evaluated, 2 (and one 'error:' line on stderr) when refused."""
    args = _parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
        if args.workers is not None and args.workers < 0:
            raise ConfigError(f"--workers {args.workers}: must be at least 0")
        cfg, classes = run_settings(args.run)
        shards, manifest = labeled_split(cfg, args.shards, args.split)
        mismatch = same_classes(classes, class_list(manifest), f"--run {args.run}", shards)
        if mismatch:
            raise ConfigError(mismatch)
        run, accelerator, note = open_run(args.run, cfg, classes, args.weights, cpu=args.cpu)
    except ConfigError as err:
        return refuse(str(err))
    tta = args.tta or cfg.tta  # the run's: its own test figures come out again
    console.print(f"{cfg.model} at {cfg.image_size} px on {accelerator.device}, weights {run.weights.described}; "
                  f"split {args.split} of {shards}" + (f" ({note})" if note else "") + f"; tta {tta}")
    if args.split in train_split_names(cfg):
        console.print(f"note: the run trained on {args.split} (--train-splits {cfg.train_splits}): these scores are "
                      "not held out", highlight=False, soft_wrap=True)
    loss_fn = evaluation_loss(cfg, classes, manifest)
    if loss_fn is None:
        console.print("no loss: --pos-weight auto needs the train split's positives, and these shards have none")
    workers = args.workers if args.workers is not None else cfg.workers  # None: the run's were the default
    loader = eval_loader(shards, split=args.split, batch_size=args.batch_size or cfg.batch_size, rank=0, world_size=1,
                         num_workers=default_workers(1) if workers is None else workers,
                         image_size=cfg.image_size)
    try:
        result = evaluate(run.model, loader, accelerator, classes=classes, split=args.split,
                          expected_ids=manifest["splits"][args.split]["ids"],
                          loss_fn=None if loss_fn is None else loss_fn.to(accelerator.device), tta=tta)
    except (RuntimeError, NonFiniteScores) as err:  # wrong ids, or diverged weights: the message says which
        return refuse(str(err))

    out = args.out or Path(args.run) / f"eval-{run.weights.label}-{args.split}"
    try:
        outputs.write_per_class_ap(out / PER_CLASS_AP, result.metrics)
        if args.split == "test":
            outputs.write_submission(out / SUBMISSION, result.ids, result.scores, classes.names)
        outputs.write_summary(out / SUMMARY, summary_block(
            run, result, split=args.split, shards=shards, run_dir=args.run, precision=accelerator.mixed_precision,
            device=str(accelerator.device), tta=tta))
    except OSError as err:
        return refuse(f"--out {out}: cannot write there ({err}); pick a writable folder")
    console.print(outputs.ap_table(result.metrics, title=f"{args.split} AP, {run.weights.label} weights ({cfg.model})"))
    loss = "-" if result.loss is None else f"{result.loss:.4f}"
    console.print(f"{len(result.ids)} images; loss {loss}; outputs in {out}: summary.json, per_class_ap.csv"
                  + (", submission.csv" if args.split == "test" else ""))
    return 0



if __name__ == "__main__":
    sys.exit(main())
