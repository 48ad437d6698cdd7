"""Pack a data set into webdataset shards: `python -m shards.pack (--voc PATH | --coco PATH | --labels CSV
--images DIR) --out SHARDS_DIR`.

One kind of source per pack:
- `--voc`: VOC, any year: PATH is a VOCdevkit folder, one of its VOC<year> folders or an official
  tar (shards.sources); repeatable ("07+12": `--voc VOC2007 --voc VOC2012`), `--year` chooses the
  trees of a VOCdevkit holding several (shards.voc_items);
- `--coco`: COCO 2014, the unzipped folder or the official zips, repeatable (shards.coco);
- `--labels CSV --images DIR [--classes FILE]`: your own photos and a labels CSV (shards.labels_csv).

What every kind shares (shards.pack_core): one sample per image, `__key__` = its id, with `jpg`
and `json`; `SHARDS_DIR/{split}-{NNNNN}.tar` plus `manifest.json` with the class list; a staged,
locked, checksummed, deterministic write; bad input refused by id, or dropped and listed with
`--skip-bad`. A split with hidden labels is packed unlabeled ("labels": null, "labeled": false).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from shards.coco import coco_plan
from shards.images import DEFAULT_MAX_SIZE, DEFAULT_QUALITY
from shards.items import Plan
from shards.labels_csv import csv_plan
from shards.lock import FolderBusy
from shards.manifest import is_labeled, skipped_ids
from shards.pack_core import DEFAULT_SAMPLES_PER_SHARD, PackError, PackOptions, check_out, pack_lock, pack_plan
from shards.sources import SourceError
from shards.voc_items import split_is_labeled, voc_plan

__all__ = ["PackError", "PackOptions", "main", "pack", "pack_from", "pack_lock", "split_is_labeled",
           "summary_lines"]

SHOWN_SKIPPED = 10  # skipped ids the console names per split; manifest.json lists them all


def pack_from(make_plan: Callable[[], Plan], out: Path, options: PackOptions, console: Console) -> dict:
    """Pack the Plan that `make_plan()` builds into `out`; returns the manifest. `out` is checked
    first, so a taken --out is refused before any source is read."""
    check_out(out)
    plan = make_plan()
    try:
        return pack_plan(plan, out, options, console)
    finally:
        plan.close()


def pack(voc_paths: Sequence[Path], out: Path, options: PackOptions, console: Console,
         years: Sequence[str] | None = None) -> dict:
    """Pack every split found in `voc_paths` (the VOC<year> trees `years` chooses) into `out`;
    returns the manifest."""
    return pack_from(lambda: voc_plan(voc_paths, years), out, options, console)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shards.pack", description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--voc", type=Path, action="append", metavar="PATH",
                      help="VOCdevkit folder, one of its VOC<year> folders (VOC2007, VOC2012, ...), or an official "
                           "VOC tar; repeatable: sources fill the same splits when their ids do not collide")
    kind.add_argument("--coco", type=Path, action="append", metavar="PATH",
                      help="COCO 2014: the folder holding annotations/, train2014/, val2014/ (and optionally "
                           "test2014/), or the official zips (train2014.zip, val2014.zip, "
                           "annotations_trainval2014.zip, ...), one --coco each")
    kind.add_argument("--labels", type=Path, metavar="CSV",
                      help="a labels CSV: header id,labels (names separated by spaces) or id,<class>,<class>,... "
                           "(0/1 cells), optionally a last column split; needs --images")
    parser.add_argument("--images", type=Path, metavar="DIR", help="with --labels: the folder of the images")
    parser.add_argument("--classes", type=Path, metavar="FILE",
                        help="with --labels: one class name per line, in the order the model scores them "
                             "(default: the names, sorted)")
    parser.add_argument("--year", action="append", metavar="YEAR",
                        help="with --voc: pack only the VOC<YEAR> trees of every --voc (needed when a VOCdevkit "
                             "holds several years; e.g. 2007); repeatable")
    parser.add_argument("--out", type=Path, required=True, metavar="SHARDS_DIR",
                        help="shard folder to create (must not exist, or be empty)")
    parser.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD, metavar="N",
                        help=f"images per shard (default {DEFAULT_SAMPLES_PER_SHARD})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="PIXELS",
                      help=f"store images with their shorter side shrunk to this (default {DEFAULT_MAX_SIZE})")
    size.add_argument("--keep-original", action="store_true", help="store images at their original size")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, metavar="Q",
                        help=f"JPEG quality of re-encoded images (default {DEFAULT_QUALITY})")
    parser.add_argument("--skip-bad", action="store_true",
                        help="pack the good samples; the console and manifest.json name the ones left out")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.samples_per_shard < 1:
        parser.error(f"--samples-per-shard must be >= 1, got {args.samples_per_shard}")
    bad_years = [year for year in args.year or () if not (len(year) == 4 and year.isdigit())]
    if bad_years:
        parser.error(f"--year {bad_years[0]}: give a four-digit VOC year such as 2007 or 2012")
    if args.year and not args.voc:
        parser.error("--year chooses VOC trees: it goes with --voc only")
    if args.max_size < 1:
        parser.error(f"--max-size must be >= 1, got {args.max_size}")
    if args.labels is not None and args.images is None:
        parser.error("--labels needs --images DIR, the folder holding the images its ids name")
    if args.labels is None and (args.images is not None or args.classes is not None):
        parser.error("--images and --classes go with --labels CSV (VOC and COCO name their own images and classes)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    options = PackOptions(args.samples_per_shard, None if args.keep_original else args.max_size,
                          args.quality, args.skip_bad)
    console = Console(stderr=True)
    if args.voc:
        make_plan = lambda: voc_plan(args.voc, args.year)  # noqa: E731
    elif args.coco:
        make_plan = lambda: coco_plan(args.coco)  # noqa: E731
    else:
        make_plan = lambda: csv_plan(args.labels, args.images, args.classes)  # noqa: E731
    try:
        manifest = pack_from(make_plan, args.out, options, console)
    except (SourceError, PackError, FolderBusy) as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)  # paths stay unbroken
        return 1 if isinstance(err, PackError) else 2
    for line in summary_lines(manifest):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"packed into {args.out}", highlight=False, soft_wrap=True)
    return 0


def summary_lines(manifest: dict) -> list[str]:
    """Per split: what was packed, whether it is labeled, and what --skip-bad dropped.

    Dropped ids are named here as well as in manifest.json, so a split (above all test, whose
    submission then lacks their rows) never shrinks without the console saying so.
    """
    lines = []
    for split, record in manifest["splits"].items():
        n = len(record["shards"])
        line = f"{split}: {record['count']} images in {n} shard{'s' if n != 1 else ''}"
        line = line if is_labeled(record) else f"{line}, labels hidden (no annotations): packed unlabeled"
        trees = [source["tree"] for source in record.get("sources", [])]
        line = f"{line} (from {' + '.join(trees)})" if trees else line
        if record.get("all_negative"):
            line += f"; {record['all_negative']} with no annotation or label, packed as negatives for every class"
        lines.append(line)
        dropped = skipped_ids(manifest, split)
        if dropped:
            more = len(dropped) - SHOWN_SKIPPED
            named = ", ".join(dropped[:SHOWN_SKIPPED]) + (f" and {more} more" if more > 0 else "")
            effect = "; a submission made from these shards lacks their rows" if split == "test" else ""
            lines.append(f"{split}: {len(dropped)} of {record['count'] + len(dropped)} listed images dropped "
                         f"by --skip-bad (reasons in manifest.json 'skipped'){effect}: {named}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
