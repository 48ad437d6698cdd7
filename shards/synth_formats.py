"""The command lines of `python -m shards.synth --format coco|csv` (shards.synth_coco, shards.synth_csv)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from shards.synth import DEFAULT_BACKGROUNDS
from shards.synth_coco import DEFAULT_SIZES, generate_coco
from shards.synth_csv import DEFAULT_ROWS, FORMS, generate_csv
from shards.synth_photos import MAX_SIDE


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("voc", "coco", "csv"), default="voc", help="the layout to write")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE, metavar="PIXELS",
                        help=f"longer side of the images (default {MAX_SIDE}, at most 512)")
    parser.add_argument("--quality", type=int, default=90, metavar="Q", help="JPEG quality (default 90)")
    parser.add_argument("--hide-test-labels", action="store_true", help="write the test images without labels")
    parser.add_argument("--backgrounds", type=Path, default=DEFAULT_BACKGROUNDS, metavar="DIR",
                        help="folder of real photos (*.jpg) to cut backgrounds from; procedural texture when "
                             "it does not exist")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 32 <= args.max_side <= 512:
        parser.error(f"--max-side {args.max_side}: give 32 to 512 pixels")
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality {args.quality}: give 1 to 100")


def main_coco(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards.synth --format coco",
                                     description="A made-up COCO 2014-format set (shards/synth_coco.py).")
    _common(parser)
    for split, n in DEFAULT_SIZES.items():
        folder = "test2014, with --hide-test-labels" if split == "test" else f"{split}2014"
        parser.add_argument(f"--{split}", type=int, default=n, metavar="N", help=f"{folder} images (default {n})")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="draw in N processes (same bytes)")
    args = parser.parse_args(argv)
    _check(parser, args)
    sizes = {s: getattr(args, s) for s in DEFAULT_SIZES}
    if min(sizes.values()) < 1 or args.jobs < 1:
        parser.error(f"split sizes and --jobs must be >= 1, got {sizes}, --jobs {args.jobs}")
    backgrounds = args.backgrounds if args.backgrounds.is_dir() else None
    generate_coco(args.out, sizes, args.seed, backgrounds, args.hide_test_labels, args.max_side, args.quality,
                  args.jobs)
    shown = f"train2014 {sizes['train']}, val2014 {sizes['val']}" + \
        (f", test2014 {sizes['test']} (labels hidden)" if args.hide_test_labels else "")
    Console(stderr=True).print(f"wrote a COCO-format set to {args.out} ({shown}, seed {args.seed})", soft_wrap=True)
    return 0


def main_csv(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards.synth --format csv",
                                     description="Made-up photos and a labels CSV (shards/synth_csv.py).")
    _common(parser)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, metavar="N", help=f"images (default {DEFAULT_ROWS})")
    parser.add_argument("--csv-form", choices=FORMS, default="tags",
                        help="tags: id,labels (names separated by spaces); onehot: id,<class>,... (0/1)")
    parser.add_argument("--with-split", action="store_true", help="add a split column (train/val/test)")
    args = parser.parse_args(argv)
    _check(parser, args)
    if args.rows < 1:
        parser.error(f"--rows {args.rows}: give 1 or more")
    backgrounds = args.backgrounds if args.backgrounds.is_dir() else None
    path = generate_csv(args.out, args.rows, args.csv_form, args.with_split, args.hide_test_labels, args.seed,
                        backgrounds, args.max_side, args.quality)
    Console(stderr=True).print(f"wrote {args.rows} images to {args.out / 'images'} and their labels to {path} "
                               f"({args.csv_form} form{', with a split column' if args.with_split else ''})",
                               soft_wrap=True)
    return 0
