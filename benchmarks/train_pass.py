"""The trainer's train pass against a bare Accelerate loop: same shards, model, recipe, processes and batch.

    python benchmarks/train_pass.py [--shards data/demo/shards] [--epochs 3] [--pairs 2]
        [--loaders device,stream] [--json-out FILE]

Runs alternate (trainer, bare, trainer, bare, ...) so that a noisy neighbour on a shared box falls
on both. The trainer runs the demo recipe (configs/demo.yaml) through `accelerate launch` with the
processes `./launch.sh train` would start (one per GPU; 2 gloo processes on a CPU box), its rate
read from history.csv (`images_per_s`: the train pass alone); the bare loop is
benchmarks/bare_loop.py. Epoch 1 is left out of both (first-touch costs). Prints the median rate of
each side per loader and their ratio (goal: the trainer at >= 0.97 of the bare loop). Make the
demo shards first with `./launch.sh demo`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def launcher() -> tuple[list[str], dict]:
    """The accelerate launch prefix and environment ./launch.sh train would use on this machine."""
    gpus = torch.cuda.device_count()
    processes = gpus if gpus else 2
    env = {**os.environ, **({} if gpus else {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})}
    multi = ["--multi_gpu"] if processes > 1 else []
    return [str(Path(sys.executable).parent / "accelerate"), "launch", *multi, "--num_processes", str(processes),
            "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no",
            "--dynamo_backend", "no"], env


RUN_LIMIT_S = 1800  # one run of a few epochs takes about a minute on a 2-core box: past this it hangs


def run(cmd: list[str], env: dict) -> None:
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"") + (err.stderr or b"")
        sys.exit(f"{' '.join(cmd)} still running after {RUN_LIMIT_S} s:\n{out.decode(errors='replace')[-4000:]}")
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")


def trainer_rates(shards: Path, loader: str, epochs: int, work: Path) -> list[float]:
    prefix, env = launcher()
    out = work / f"trainer-{loader}-{len(list(work.iterdir()))}"
    run([*prefix, "trainer/main.py", "--config", "configs/demo.yaml", "--shards", str(shards), "--out", str(out),
         "--epochs", str(epochs), "--loader", loader, "--test-frequency", "1000"], env)
    with (out / "history.csv").open(newline="") as handle:
        return [float(row["images_per_s"]) for row in csv.DictReader(handle)]


def bare_rates(shards: Path, loader: str, epochs: int, work: Path) -> list[float]:
    prefix, env = launcher()
    result = work / f"bare-{loader}-{len(list(work.iterdir()))}.json"
    run([*prefix, "benchmarks/bare_loop.py", "--shards", str(shards), "--epochs", str(epochs), "--loader", loader,
         "--workers", "1", "--json-out", str(result)], env)
    return json.loads(result.read_text())["images_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=ROOT / "data" / "demo" / "shards")
    parser.add_argument("--epochs", type=int, default=3, help="per run; epoch 1 is not counted")
    parser.add_argument("--pairs", type=int, default=2, help="trainer/bare pairs per loader")
    parser.add_argument("--loaders", default="device,stream")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if not (args.shards / "manifest.json").is_file():
        parser.error(f"--shards {args.shards}: no manifest.json (make the demo shards with ./launch.sh demo)")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is not counted)")

    console, results = Console(), {}
    with tempfile.TemporaryDirectory(prefix="train-pass-") as tmp:
        for loader in args.loaders.split(","):
            mine, bare = [], []
            for pair in range(args.pairs):
                mine += trainer_rates(args.shards, loader, args.epochs, Path(tmp))[1:]
                bare += bare_rates(args.shards, loader, args.epochs, Path(tmp))[1:]
                console.print(f"{loader} pair {pair + 1}: trainer {mine[-(args.epochs - 1):]}, bare {bare[-(args.epochs - 1):]}")
            results[loader] = {"trainer": mine, "bare": bare, "ratio": statistics.median(mine) / statistics.median(bare)}

    table = Table(title=f"train pass, images/s (median of epochs 2-{args.epochs} x {args.pairs} runs)")
    for column in ("loader", "trainer", "bare loop", "trainer / bare"):
        table.add_column(column, justify="right")
    for loader, result in results.items():
        table.add_row(loader, f"{statistics.median(result['trainer']):.1f}", f"{statistics.median(result['bare']):.1f}",
                      f"{result['ratio']:.3f}")
    console.print(table)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
