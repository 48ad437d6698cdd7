"""The part of shards.pack every data set shares: a Plan (shards.items) -> shards + manifest.json.

One sample per image, `__key__` = its id, with `jpg` (RGB JPEG, by default short side 256) and
`json` ({"id", "labels": one state per class or null, "objects", "width", "height"}). Shards are
`SHARDS_DIR/{split}-{NNNNN}.tar`, plus `manifest.json`.

Written to a temporary folder next to SHARDS_DIR and renamed at the end, so a failed pack never
leaves a half-written shard set (a killed one's `.SHARDS_DIR.partial-*` is removed by the next
pack); `.SHARDS_DIR.lock` refuses a second pack into the same place. manifest.json records each
shard's sha256 (shards.verify). Output is deterministic: sorted ids, fixed tar metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shards.images import DEFAULT_MAX_SIZE, DEFAULT_QUALITY, ImageError, choose_frame, orientation, prepare_image
from shards.items import ItemSource, Plan
from shards.lock import FolderLock
from shards.manifest import split_record, write_manifest
from shards.verify import file_sha256, shard_names

# 32 per shard gives VOC07 train (2501 images) 79 shards: ranks x workers must never exceed
# the shard count, and 64 covers e.g. 8 GPUs x 8 workers.
DEFAULT_SAMPLES_PER_SHARD = 32
ABSENT = -1


class PackError(RuntimeError):
    """The input has bad samples (and --skip-bad was not given) or the output is unusable."""


@dataclass(frozen=True)
class PackOptions:
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    max_size: int | None = DEFAULT_MAX_SIZE  # stored shorter side; None keeps originals
    quality: int = DEFAULT_QUALITY
    skip_bad: bool = False


def _sample(source: ItemSource, image_id: str, options: PackOptions,
            labeled: bool) -> tuple[dict, list[int] | None]:
    """The webdataset sample of one image and its states (None when the split is unlabeled);
    raises ValueError on bad input."""
    item = source.item(image_id, labeled)
    try:
        tag, size = orientation(item.image)
        # EXIF orientation: upright or as stored, whichever frame the annotation's boxes are in (shards/images.py).
        upright = choose_frame(tag, size, item.size)
        stored = prepare_image(item.image, options.max_size, options.quality, upright=upright)
    except ImageError as err:
        raise ValueError(f"{item.image_name}: {err}") from None
    record = {
        "id": image_id,
        # null, not a made-up label, for hidden labels: the readers substitute their sentinel.
        "labels": item.states,
        "objects": item.objects,
        # The original size (boxes are in its coordinates), whatever size is stored.
        "width": stored.width,
        "height": stored.height,
    }
    return {"__key__": image_id, "jpg": stored.jpeg, "json": json.dumps(record).encode()}, item.states


def pack_split(split: str, plan: Plan, out_dir: Path, options: PackOptions,
               progress: Progress) -> tuple[dict, list[dict]]:
    """Write `split`'s shards (the ids of every source of the plan's split, no id in two) into
    out_dir; returns its manifest record and its bad samples."""
    parts = plan.splits[split]
    labeled = plan.labeled[split]
    good_ids, states, bad = [], [], []
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
    origins = [source.origin(len(set(ids))) for source, ids in parts]
    record = split_record(shards, good_ids, states if labeled else None, plan.classes, skipped_count=len(bad),
                          sources=origins)
    if plan.count_all_negative and labeled:
        record["all_negative"] = sum(1 for s in states if all(state == ABSENT for state in s))
    return record, bad


def pack_plan(plan: Plan, out: Path, options: PackOptions, console: Console) -> dict:
    """Write `plan` into the shard folder `out` (staged, locked, checksummed); returns the manifest."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with pack_lock(out):
        check_out(out)  # again: a pack that held the lock until now may have created it
        _remove_partials(out, console)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700: nobody else could read the shards
            manifest = _pack_into(staging, plan, options, console)
            manifest["source"] = list(plan.inputs)
            manifest["sha256"] = {name: file_sha256(staging / name) for name in shard_names(manifest)}
            write_manifest(staging, manifest)
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def pack_lock(out: Path) -> FolderLock:
    """The lock a pack into `out` holds: `.OUT.lock` next to it (`out` does not exist until the end)."""
    return FolderLock(out.parent / f".{out.name}.lock", f"--out {out}", "being packed by another shards.pack")


def check_out(out: Path) -> None:
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


def _pack_into(staging: Path, plan: Plan, options: PackOptions, console: Console) -> dict:
    records, bad = {}, []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        for split in plan.splits:
            records[split], split_bad = pack_split(split, plan, staging, options, progress)
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
        **plan.classes.to_manifest(),
        **plan.extra,
        "splits": records,
        "image_policy": {"format": "JPEG", "mode": "RGB", "short_side_max": options.max_size,
                         "jpeg_quality": options.quality,
                         "note": "width/height in each sample's json are the original size"},
        "samples_per_shard": options.samples_per_shard,
        "skipped": bad,
    }
