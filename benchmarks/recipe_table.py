"""The field's recipe tools one at a time on the demo recipe: test mAP, CF1, OF1 and step time.

    python benchmarks/recipe_table.py [--shards data/demo/shards] [--seeds 0,1,2] [--epochs 18]
        [--variants base,ema,asl,...] [--json-out FILE]

Each variant is configs/demo.yaml (the base) plus one change, trained as ./launch.sh train would
(2 gloo processes on a CPU box, one per GPU otherwise) with each seed; `tta` is the base run's own
weights scored again with `trainer.evaluate_run --tta flip`, not a new run. Prints the mean (and
range) over seeds of the test mAP, CF1 and OF1 (thresholded at 0.5) and the train pass's seconds
per step (history.csv images/s, epoch 1 left out), and the change against the base. Make the demo
shards first with `./launch.sh demo`. Not a test: it takes about 2-4 minutes a run on a 2-core box.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from train_pass import ROOT, launcher, run

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "ema": ["--ema-decay", "0.99", "--test-with", "ema"],
    "asl": ["--loss", "asl"],
    "randaugment": ["--augment", "randaugment"],
    "mixup": ["--mixup", "0.4"],
    "cutmix": ["--cutmix", "1.0"],
    "label_smoothing": ["--loss", "bce", "--label-smoothing", "0.1"],
    "tta": [],  # the base run, scored with --tta flip
}


def train(shards: Path, out: Path, seed: int, extra: list[str], epochs: int) -> None:
    prefix, env = launcher()
    run([*prefix, "trainer/main.py", "--config", "configs/demo.yaml", "--shards", str(shards), "--out", str(out),
         "--seed", str(seed), "--epochs", str(epochs), *extra], env)


def figures(summary: dict, history: Path, batch: int) -> dict:
    """test mAP, CF1, OF1 and seconds per step of one run (`summary`: its summary.json or evaluate_run's)."""
    thresholded = summary.get("test_thresholded") or summary.get("thresholded") or {}
    rows = list(csv.DictReader(history.open()))[1:]  # epoch 1: first-touch costs
    rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    step = 2 * batch / statistics.median(rates) if rates else None  # 2 processes x batch images per step
    return {"map": summary.get("test_map", summary.get("map")), "cf1": thresholded.get("CF1"),
            "of1": thresholded.get("OF1"), "step_s": step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=ROOT / "data" / "demo" / "shards")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=18, help="the demo's 18 by default")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="recipe-table-") as tmp:
        for seed in seeds:
            for name in variants:
                out = Path(tmp) / f"{name}-{seed}"
                if name == "tta":
                    base = Path(tmp) / f"base-{seed}"
                    if not base.is_dir():
                        train(args.shards, base, seed, [], args.epochs)
                    prefix, env = launcher()
                    run([sys.executable, "-m", "trainer.evaluate_run", "--run", str(base), "--weights", "final",
                         "--tta", "flip", "--out", str(out), "--cpu"], env)
                    results[name].append(figures(json.loads((out / "summary.json").read_text()),
                                                 base / "history.csv", 8))
                    continue
                train(args.shards, out, seed, VARIANTS[name], args.epochs)
                results[name].append(figures(json.loads((out / "summary.json").read_text()), out / "history.csv", 8))
                Console(stderr=True).print(f"{name} seed {seed}: {results[name][-1]}")
    print_table(results, seeds)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _cell(values: list[float | None], base: list[float | None] | None, digits: int = 4) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    mean = statistics.mean(present)
    text = f"{mean:.{digits}f}" + (f" ({min(present):.{digits}f}-{max(present):.{digits}f})" if len(present) > 1 else "")
    base_present = [v for v in base or [] if v is not None]
    return text + (f" [{mean - statistics.mean(base_present):+.{digits}f}]" if base_present else "")


def print_table(results: dict[str, list[dict]], seeds: list[int]) -> None:
    table = Table(title=f"demo recipe + one change, seeds {', '.join(map(str, seeds))} (mean (range) [vs base])")
    for column in ("variant", "test mAP", "CF1", "OF1", "s / step"):
        table.add_column(column)
    base = results.get("base")
    for name, runs in results.items():
        def col(key: str, digits: int = 4) -> str:
            return _cell([r[key] for r in runs], None if name == "base" or not base else [r[key] for r in base], digits)
        table.add_row(name, col("map"), col("cf1"), col("of1"), col("step_s", 3))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
