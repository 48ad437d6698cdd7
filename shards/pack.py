"""Pack VOC into webdataset shards: `python -m shards.pack --voc PATH [--voc PATH2] --out SHARDS_DIR`.

Any VOC year: PATH is a VOCdevkit folder, one of its VOC<year> folders or an official tar
(shards.sources). A VOCdevkit holding several years is refused naming them unless `--year`
chooses. Several sources fill the same splits when no id is listed twice ("07+12":
`--voc VOC2007 --voc VOC2012` packs train and val from both years, test from VOC2007, the
one that has it); the manifest records the years and trees of every split.

One sample per image, `__key__` = the VOC id, with `jpg` (RGB JPEG, by default short side
256) and `json` ({"id", "labels": 20 devkit states 1/0/-1, "objects", "width", "height"}).
Shards are `SHARDS_DIR/{split}-{NNNNN}.tar`, plus `manifest.json`.

A split none of whose ids has an annotation (a test set with hidden labels) is packed
unlabeled, no flag needed ("labels": null, manifest "labeled": false); a split with only SOME
annotations missing is bad input like any other.

Written to a temporary folder next to SHARDS_DIR and renamed at the end, so a failed pack never
leaves a half-written shard set (a killed one's `.SHARDS_DIR.partial-*` is removed by the next
pack); `.SHARDS_DIR.lock` refuses a second pack into the same place. manifest.json records each
shard's sha256 (shards.verify). Output is deterministic: sorted ids, fixed tar metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shards.annotations import AnnotationError, devkit_states, parse_annotation
from shards.classes import VOC
from shards.images import DEFAULT_MAX_SIZE, DEFAULT_QUALITY, ImageError, choose_frame, orientation, prepare_image
from shards.lock import FolderBusy, FolderLock
from shards.manifest import is_labeled, skipped_ids, split_record, write_manifest
from shards.sources import SourceError, VocSource, collect_splits, open_sources
from shards.verify import file_sha256, shard_names

# 32 per shard gives VOC07 train (2501 images) 79 shards: ranks x workers must never exceed
# the shard count, and 64 covers e.g. 8 GPUs x 8 workers.
DEFAULT_SAMPLES_PER_SHARD = 32
SHOWN_SKIPPED = 10  # skipped ids the console names per split; manifest.json lists them all


class PackError(RuntimeError):
    """The input has bad samples (and --skip-bad was not given) or the output is unusable."""


@dataclass(frozen=True)
class PackOptions:
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    max_size: int | None = DEFAULT_MAX_SIZE  # stored shorter side; None keeps originals
    quality: int = DEFAULT_QUALITY
    skip_bad: bool = False


def _sample(source: VocSource, image_id: str, options: PackOptions,
            labeled: bool) -> tuple[dict, list[int] | None]:
    """The webdataset sample of one image and its devkit states (None when the split is
    unlabeled); raises ValueError on bad input."""
    xml = source.annotation(image_id) if labeled else None
    if labeled and xml is None:
        raise ValueError(f"no annotation Annotations/{image_id}.xml")
    data = source.image(image_id)
    if data is None:
        raise ValueError(f"no image JPEGImages/{image_id}.jpg")
    annotation = None
    if xml is not None:
        try:
            annotation = parse_annotation(xml)
        except AnnotationError as err:
            raise ValueError(f"Annotations/{image_id}.xml: {err}") from None
    objects = None if annotation is None else annotation.objects
    try:
        tag, size = orientation(data)
        # EXIF orientation: upright or as stored, whichever frame the XML's boxes are in (shards/images.py).
        upright = choose_frame(tag, size, None if annotation is None else (annotation.width, annotation.height))
        stored = prepare_image(data, options.max_size, options.quality, upright=upright)
    except ImageError as err:
        raise ValueError(f"JPEGImages/{image_id}.jpg: {err}") from None
    states = None if objects is None else devkit_states(objects)
    record = {
        "id": image_id,
        # null, not a made-up label, for hidden labels: the readers substitute their sentinel.
        "labels": states,
        "objects": None if objects is None else [obj.to_json() for obj in objects],
        # The original size (boxes are in its coordinates), whatever size is stored.
        "width": stored.width,
        "height": stored.height,
    }
    return {"__key__": image_id, "jpg": stored.jpeg, "json": json.dumps(record).encode()}, states


def split_is_labeled(source: VocSource, ids: Sequence[str]) -> bool:
    """False when no id of the split has an annotation: its labels are hidden, not broken.

    One annotation is enough to call the split labeled, so that a split with some annotations
    lost still fails naming them instead of silently packing without labels.
    """
    return not ids or any(source.has_annotation(image_id) for image_id in ids)


def _labeled(split: str, parts: Sequence[tuple[VocSource, Sequence[str]]]) -> bool:
    """Whether the split's sources are labeled; SourceError when some are and some hide their labels."""
    labeled = {str(source): split_is_labeled(source, ids) for source, ids in parts}
    if len(set(labeled.values())) > 1:
        with_labels = ", ".join(name for name, known in labeled.items() if known)
        hidden = ", ".join(name for name, known in labeled.items() if not known)
        raise SourceError(f"split '{split}': {with_labels} has annotations and {hidden} has none (labels hidden); "
                          "one split cannot be both: pack them into separate shard folders")
    return all(labeled.values())


def pack_split(split: str, parts: Sequence[tuple[VocSource, Sequence[str]]], out_dir: Path, options: PackOptions,
               progress: Progress) -> tuple[dict, list[dict]]:
    """Write `split`'s shards (the ids of every source in `parts`, no id in two) into out_dir;
    returns its manifest record and its bad samples."""
    good_ids, states, bad = [], [], []
    labeled = _labeled(split, parts)
    source_of = {image_id: source for source, ids in parts for image_id in ids}
    hidden = "" if labeled else " (labels hidden)"
    names = " + ".join(source.name for source, _ in parts)
    task = progress.add_task(f"{split:5s} <- {names}{hidden}", total=len(source_of))
    # mtime and owner fixed so the same input gives byte-identical shards.
    with wds.ShardWriter(str(out_dir / f"{split}-%05d.tar"), maxcount=options.samples_per_shard,
                         verbose=0, mtime=0, user="voc", group="voc") as writer:
        for image_id in sorted(source_of):
            try:
                sample, image_states = _sample(source_of[image_id], image_id, options, labeled)
            except ValueError as err:
                bad.append({"id": image_id, "split": split, "reason": str(err)})
            else:
                writer.write(sample)
                good_ids.append(image_id)
                states.append(image_states)
            progress.advance(task)
    shards = sorted(p.name for p in out_dir.glob(f"{split}-*.tar"))
    origins = [{"source": str(source.path.resolve()), "tree": source.name, "year": source.year,
                "listed": len(set(ids))} for source, ids in parts]
    return split_record(shards, good_ids, states if labeled else None, VOC, skipped_count=len(bad), sources=origins), bad


def pack(voc_paths: Sequence[Path], out: Path, options: PackOptions, console: Console,
         years: Sequence[str] | None = None) -> dict:
    """Pack every split found in `voc_paths` (the VOC<year> trees `years` chooses) into `out`;
    returns the manifest."""
    _check_out(out)
    sources: list[VocSource] = []
    try:
        for path in voc_paths:
            sources += open_sources(path, years)
        splits = collect_splits(sources)
        out.parent.mkdir(parents=True, exist_ok=True)
        with pack_lock(out):
            _check_out(out)  # again: a pack that held the lock until now may have created it
            _remove_partials(out, console)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
            try:
                os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700: nobody else could read the shards
                manifest = _pack_into(staging, splits, options, console)
                manifest["source"] = [str(p.resolve()) for p in voc_paths]
                manifest["sha256"] = {name: file_sha256(staging / name) for name in shard_names(manifest)}
                write_manifest(staging, manifest)
                if out.exists():
                    out.rmdir()  # empty, checked above
                os.replace(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        for source in sources:
            source.close()
    return manifest


def pack_lock(out: Path) -> FolderLock:
    """The lock a pack into `out` holds: `.OUT.lock` next to it (`out` does not exist until the end)."""
    return FolderLock(out.parent / f".{out.name}.lock", f"--out {out}", "being packed by another shards.pack")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"--out {out} already exists and is not an empty folder; remove it or pick another")


def _remove_partials(out: Path, console: Console) -> None:
    """Remove what a killed pack into `out` left behind (we hold the lock: no live pack owns them)."""
    for partial in sorted(out.parent.glob(f".{out.name}.partial-*")):
        size = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
        shutil.rmtree(partial)
        console.print(f"removed {partial} ({size / 1e6:.1f} MB), left by an earlier pack into {out} that did "
                      f"not finish", highlight=False, soft_wrap=True)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once (packing is single-threaded)
    os.umask(mask)
    return mask


def _pack_into(staging: Path, splits: dict, options: PackOptions, console: Console) -> dict:
    records, bad = {}, []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        for split, parts in splits.items():
            records[split], split_bad = pack_split(split, parts, staging, options, progress)
            bad += split_bad
    if bad and not options.skip_bad:
        listing = "\n".join(f"  {b['split']} {b['id']}: {b['reason']}" for b in bad)
        raise PackError(f"{len(bad)} bad sample(s); nothing was written. Fix them, or pass --skip-bad "
                        f"to pack the rest and list these in manifest.json:\n{listing}")
    empty = [split for split, record in records.items() if record["count"] == 0]
    if empty:
        raise PackError(f"no usable sample in split(s) {', '.join(empty)}; nothing was written")
    for b in bad:
        console.print(f"[yellow]skipped[/] {b['split']} {b['id']}: {b['reason']}", soft_wrap=True)
    return {
        **VOC.to_manifest(),
        "splits": records,
        "image_policy": {"format": "JPEG", "mode": "RGB", "short_side_max": options.max_size,
                         "jpeg_quality": options.quality,
                         "note": "width/height in each sample's json are the original size"},
        "samples_per_shard": options.samples_per_shard,
        "skipped": bad,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", type=Path, action="append", required=True, metavar="PATH",
                        help="VOCdevkit folder, one of its VOC<year> folders (VOC2007, VOC2012, ...), or an official "
                             "VOC tar; repeatable: sources fill the same splits when their ids do not collide")
    parser.add_argument("--year", action="append", metavar="YEAR",
                        help="pack only the VOC<YEAR> trees of every --voc (needed when a VOCdevkit holds several "
                             "years; e.g. 2007); repeatable")
    parser.add_argument("--out", type=Path, required=True, metavar="SHARDS_DIR", help="shard folder to create (must not exist, or be empty)")
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
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1:
        parser.error(f"--samples-per-shard must be >= 1, got {args.samples_per_shard}")
    bad_years = [year for year in args.year or () if not (len(year) == 4 and year.isdigit())]
    if bad_years:
        parser.error(f"--year {bad_years[0]}: give a four-digit VOC year such as 2007 or 2012")
    if args.max_size < 1:
        parser.error(f"--max-size must be >= 1, got {args.max_size}")
    options = PackOptions(args.samples_per_shard, None if args.keep_original else args.max_size,
                          args.quality, args.skip_bad)
    console = Console(stderr=True)
    try:
        manifest = pack(args.voc, args.out, options, console, years=args.year)
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
        lines.append(f"{line} (from {' + '.join(trees)})" if trees else line)
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
