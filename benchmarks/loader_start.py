"""Loader worker start-up and per-pass cost, as the trainer pays them (docs/data.md, Loader workers).

`python benchmarks/loader_start.py SHARDS [--workers 2 --batch-size 32 --repeats 5]`

Imports trainer.main first (what a trainer process holds when it starts loaders), then per
loader (train epoch, val pass) times `iter(loader)` (workers started), the first batch and the
whole pass, for a first start and then `--repeats` more (new workers each, as per epoch). Prints
one JSON line per loader with the median of the repeats and the first start apart. Run it from
another checkout (PYTHONPATH) to compare versions of shards.reader.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import trainer.main  # noqa: F401 - the parent's imports, as in a training process
from shards.reader import eval_loader, train_loader


def timed_pass(make: Callable[[], object]) -> dict[str, float]:
    """Seconds to start the workers, to get the first batch after that, and for the whole pass."""
    loader = make()
    start = time.perf_counter()
    batches = iter(loader)
    started = time.perf_counter()
    next(batches)
    first = time.perf_counter()
    for _ in batches:
        pass
    end = time.perf_counter()
    return {"start": started - start, "first_batch": first - started, "pass": end - start}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    common = dict(batch_size=args.batch_size, rank=0, world_size=1, num_workers=args.workers, image_size=227)
    loaders = {
        "train": lambda epoch: train_loader(args.shards, seed=0, epoch=epoch, preset="crop_flip", **common),
        "val": lambda epoch: eval_loader(args.shards, split="val", **common),
    }
    for name, make in loaders.items():
        runs = [timed_pass(lambda: make(epoch)) for epoch in range(args.repeats + 1)]
        print(json.dumps({"loader": name, "workers": args.workers, "first": {k: round(v, 3) for k, v in runs[0].items()},
                          "median": {k: round(statistics.median(r[k] for r in runs[1:]), 3) for k in runs[0]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
