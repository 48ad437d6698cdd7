"""Pack rate and peak memory of `shards.pack`, COCO 2014 format against VOC (docs/performance.md).

`python benchmarks/pack_rate.py [--coco-images 20000] [--voc-images 2000] [--max-side 500] [--jobs 2]`

Makes a COCO 2014-format set of --coco-images images (shards.synth --format coco: 80% train2014,
20% val2014) and a VOC-format set of --voc-images (shards.synth, default sizes' proportions),
packs each in a child process (`python -m shards.pack`, default options) and prints per pack:
images/s over the whole pack (wall clock, process start and manifest included) and the child's
peak RSS (its own ru_maxrss from wait4, so the generation's processes do not count). Images are
made at --max-side (at most 512; 500 is VOC's size and above the stored short side 256, so packing
resizes and re-encodes as it would COCO's 640x480 photos). Not a test: minutes at the default size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from shards.synth import DEFAULT_BACKGROUNDS, generate
from shards.synth_coco import generate_coco


CHILD_LIMIT_S = 3600  # a 20000-image pack takes minutes on a 2-core box: past this it hangs


def _child(command: list[str]) -> tuple[subprocess.Popen, str, int]:
    """Run `command`; (the finished process, its stderr, its peak RSS in KiB). A child still running
    after CHILD_LIMIT_S is killed (the reads below then end) and the benchmark stops saying so."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(CHILD_LIMIT_S, child.kill)
    deadline.start()
    try:
        err = child.stderr.read() if child.stderr else ""
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
    finally:
        deadline.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode == -signal.SIGKILL:
        sys.exit(f"{' '.join(command)} still running after {CHILD_LIMIT_S} s: killed")
    return child, err, usage.ru_maxrss  # Linux: KiB


def import_rss_mb() -> float:
    """Peak RSS of a process that only imports shards.pack (torch comes with webdataset): the floor."""
    _, _, kib = _child([sys.executable, "-c", "import shards.pack"])
    return round(kib / 1024, 1)


def timed_pack(args: list[str], images: int) -> dict:
    """Run `python -m shards.pack ARGS` as a child; its wall time, images/s and peak RSS."""
    start = time.perf_counter()
    child, err, kib = _child([sys.executable, "-m", "shards.pack", *args])
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"shards.pack {' '.join(args)} exited {child.returncode}:\n{err[-2000:]}")
    return {"images": images, "seconds": round(seconds, 1), "images_per_s": round(images / seconds, 1),
            "peak_rss_mb": round(kib / 1024, 1),
            "summary": [line for line in err.splitlines() if line.startswith(("train:", "val:", "test:"))]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-images", type=int, default=20000, metavar="N")
    parser.add_argument("--voc-images", type=int, default=2000, metavar="N")
    parser.add_argument("--max-side", type=int, default=500, metavar="PIXELS", help="made-up images' longer side")
    parser.add_argument("--quality", type=int, default=90, metavar="Q", help="made-up images' JPEG quality")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="processes drawing the made-up images")
    parser.add_argument("--workdir", type=Path,
                        help="where to make and pack the sets (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pack-rate-"))
    backgrounds = DEFAULT_BACKGROUNDS if DEFAULT_BACKGROUNDS.is_dir() else None
    try:
        start = time.perf_counter()
        train = round(args.coco_images * 0.8)
        generate_coco(work / "coco", {"train": train, "val": args.coco_images - train}, seed=0,
                      backgrounds_dir=backgrounds, max_side=args.max_side, quality=args.quality, jobs=args.jobs)
        made_coco = time.perf_counter() - start
        voc_sizes = {"train": args.voc_images // 2, "val": args.voc_images // 5}
        voc_sizes["test"] = args.voc_images - sum(voc_sizes.values())
        generate(work / "voc", voc_sizes, seed=0, backgrounds_dir=backgrounds, jobs=args.jobs)
        print(json.dumps({"made": {"coco_images": args.coco_images, "coco_seconds": round(made_coco, 1),
                                   "voc_images": args.voc_images, "max_side": args.max_side}}), flush=True)
        coco = timed_pack(["--coco", str(work / "coco"), "--out", str(work / "coco-shards")], args.coco_images)
        print(json.dumps({"coco": coco}), flush=True)
        voc = timed_pack(["--voc", str(work / "voc"), "--out", str(work / "voc-shards")], args.voc_images)
        print(json.dumps({"voc": voc}), flush=True)
        print(json.dumps({"import_only_peak_rss_mb": import_rss_mb()}), flush=True)
        print(f"COCO format: {coco['images_per_s']} images/s, peak RSS {coco['peak_rss_mb']} MB "
              f"({args.coco_images} images); VOC: {voc['images_per_s']} images/s, peak RSS {voc['peak_rss_mb']} MB "
              f"({args.voc_images} images)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
