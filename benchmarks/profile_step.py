"""Where a training step's time goes, and whether it waits for the GPU: a profile of the steady state.

    python benchmarks/profile_step.py --shards DIR [--model alexnet] [--batch-size 50] [--image-size 227]
        [--mixed-precision bf16] [--channels-last] [--loaders device,stream] [--steps 20] [--warmup 10]
        [--json-out FILE] [--fail-on-sync]

Per loader, after --warmup untimed steps of trainer.loop.step.train_updates (the loop trainer/main.py
runs) fed by the trainer's own data source:
- host syncs: --steps steps under torch.cuda.set_sync_debug_mode("warn"), which warns at every
  call that makes the host wait for the GPU (.item(), a bool test of a device tensor, a copy to
  the host, a pageable copy...): their count per step and where they come from (file:line);
- ms per step over the same steps (synchronized at both ends);
- the first loader (device by default) also under torch.profiler for --steps steps: the top CUDA
  kernels and the top CPU ops by self time, per step.
On CPU there is no sync to count (null) and the profile has CPU ops only (what --smoke checks).
Prints one JSON object; --json-out also writes it; --fail-on-sync exits 1 when a loader's
steady-state step syncs (the issue's goal: none, for either loader).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import LOADERS, all_epochs, prepared_step, synchronize  # noqa: E402  (a sibling script, not a package)

from models import list_models  # noqa: E402
from trainer.data.choose import open_data  # noqa: E402
from trainer.loop.step import train_updates  # noqa: E402
from trainer.config.fields import TrainConfig  # noqa: E402

TOP = 15


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/profile_step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--model", default="alexnet", choices=list_models())
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--augment", default="crop_flip")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--loaders", default="device,stream", help="comma-separated; the first is profiled")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--fail-on-sync", action="store_true", help="exit 1 when a steady-state step syncs")
    args = parser.parse_args(argv)
    args.loaders = [name for name in args.loaders.split(",") if name]
    if not args.loaders or set(args.loaders) - set(LOADERS):
        parser.error(f"--loaders: choose from {', '.join(LOADERS)}")
    return args


def count_syncs(steps, count: int, device: torch.device) -> tuple[float, int | None, list[str]]:
    """(seconds of `count` steps, host syncs in them or None on CPU, the commonest sync sites)."""
    synchronize(device)
    if device.type != "cuda":
        start = time.perf_counter()
        sum(1 for _ in itertools.islice(steps, count))
        return time.perf_counter() - start, None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        try:
            sum(1 for _ in itertools.islice(steps, count))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        synchronize(device)
        seconds = time.perf_counter() - start
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}: {str(w.message)[:80]}" for w in syncs)
    return seconds, len(syncs), [f"{n}x {site}" for site, n in sites.most_common(10)]


def top_ops(prof: profile, key: str, steps: int) -> list[dict]:
    rows = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    rows.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"name": e.key[:120], "calls_per_step": round(e.count / steps, 2),
             "ms_per_step": round(getattr(e, key) / 1000 / steps, 3)} for e in rows[:TOP]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = TrainConfig(shards=str(args.shards), model=args.model, batch_size=args.batch_size,
                      image_size=args.image_size, augment=args.augment, mixed_precision=args.mixed_precision,
                      channels_last=args.channels_last, workers=args.workers)
    accelerator, model, step_args = prepared_step(cfg)
    device = accelerator.device
    result: dict = {"model": cfg.model, "batch_size": cfg.batch_size, "image_size": cfg.image_size,
                    "mixed_precision": cfg.mixed_precision, "channels_last": cfg.channels_last, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "steps": args.steps, "warmup": args.warmup, "loaders": []}
    for position, loader in enumerate(args.loaders):
        data, line = open_data(TrainConfig(**{**vars(cfg), "loader": loader}), accelerator)
        steps = train_updates(model, all_epochs(data), **step_args)
        try:
            for _ in itertools.islice(steps, args.warmup):
                pass
            seconds, syncs, sites = count_syncs(steps, args.steps, device)
            record = {"loader": loader, "loader_line": line, "ms_per_step": round(1000 * seconds / args.steps, 3),
                      "host_syncs_per_step": None if syncs is None else round(syncs / args.steps, 2),
                      "sync_sites": sites}
            if position == 0:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                with profile(activities=activities) as prof:
                    sum(1 for _ in itertools.islice(steps, args.steps))
                    synchronize(device)
                record["top_cuda_kernels"] = top_ops(prof, "self_device_time_total", args.steps) \
                    if device.type == "cuda" else []
                record["top_cpu_ops"] = top_ops(prof, "self_cpu_time_total", args.steps)
        finally:
            steps.close()
        result["loaders"].append(record)
        del data, steps
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    synced = [r["loader"] for r in result["loaders"] if r["host_syncs_per_step"]]
    if synced and args.fail_on_sync:
        print(f"error: the steady-state step syncs with the GPU for --loader {', '.join(synced)} (sync_sites above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
