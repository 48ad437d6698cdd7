"""manifest.json: what a shard folder holds, read by the loaders and the trainer.

{"classes": [names in logit order], "background_logit": false (absent for VOC: shards.classes),
 "category_ids": [COCO's ids, in the classes' order] (COCO only),
 "splits": {split: {"count", "shards", "ids", "labeled", "positives", "skipped_count", "years", "sources",
                    "all_negative" (COCO and labels CSV)}},
 "image_policy": {...}, "samples_per_shard": int, "source": [paths], "skipped": [{"id", "split", "reason"}],
 "sha256": {shard file name: hex digest}}

- "labeled": true for a split packed from its annotations; false for a split whose labels are
  hidden (no id of it has an annotation: a challenge or course test set such as VOC2012 test).
  An unlabeled split has "positives": null (not {}: no count is known, and null cannot be read
  as "no positives"), and its samples carry "labels": null and "objects": null; the readers give
  them shards.annotations.UNLABELED_STATE for every class so that batches still collate.
  Manifests written before the key existed have only labeled splits: read it with is_labeled().
- "skipped_count": how many ids of the split's ImageSets list `--skip-bad` left out of the
  shards (so a submission made from them has that many fewer rows); their ids and reasons are in
  "skipped". Older manifests lack the key: read both with skipped_ids().
- "years": the VOC years the split's images come from (["2007"], or ["2007", "2012"] for 07+12),
  and "sources": one {"source": the --voc path, "tree": e.g. "VOC2012", "year": "2012" (null when
  the folder name says none), "listed": ids its ImageSets list} per VOC tree that filled the
  split. Older manifests lack both (VOC2007 only was packed then). COCO and a labels CSV write
  their own "sources" (e.g. {"source", "tree": "train2014", "year": "2014", "listed", "annotations"}
  for COCO; the CSV and image folder for a labels CSV).
- "all_negative": images of a labeled COCO or CSV split with no annotation or label at all, kept
  as negatives for every class (VOC has none: every VOC image holds an object).
- "sha256": each shard file's checksum at pack time (shards.verify checks them; the trainer
  does before training). Older manifests lack it: shards.verify.has_checksums().
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from shards.classes import ClassList, ClassListError, class_list

MANIFEST_NAME = "manifest.json"


class ManifestError(FileNotFoundError):
    """A shard folder without a usable manifest.json."""


def split_record(shards: Sequence[str], ids: Sequence[str], states: Sequence[Sequence[int]] | None,
                 classes: ClassList, skipped_count: int = 0, sources: Sequence[dict] = ()) -> dict:
    """The manifest entry of one split; `states` are the labels of `ids` (one state per class of
    `classes`), in order, or None for a split packed without annotations (labels hidden);
    `sources`: where its ids came from, one {"source", "tree", "year", "listed"} per source."""
    return {
        "count": len(ids),
        "shards": list(shards),
        "ids": sorted(ids),
        "labeled": states is not None,
        # Images with state 1 (VOC: at least one non-difficult instance): the positives of the headline AP.
        "positives": None if states is None else
        {name: sum(1 for s in states if s[c] == 1) for c, name in enumerate(classes.names)},
        "skipped_count": skipped_count,
        "years": sorted({source["year"] for source in sources if source.get("year")}),
        "sources": list(sources),
    }


def is_labeled(entry: dict) -> bool:
    """Whether a split (an entry of manifest["splits"]) was packed with its annotations."""
    # A manifest from before the flag existed could only hold labeled splits.
    return entry.get("labeled", True) is not False


def skipped_ids(manifest: dict, split: str) -> list[str]:
    """Ids of `split` that --skip-bad left out of the shards, sorted (empty when none)."""
    return sorted(s["id"] for s in manifest.get("skipped", []) if s.get("split") == split)


def write_manifest(shards_dir: Path, manifest: dict) -> None:
    (shards_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def load_manifest(shards_dir: str | Path) -> dict:
    """Read SHARDS_DIR/manifest.json; errors name the path and what to do."""
    path = Path(shards_dir) / MANIFEST_NAME
    hint = f"pack the data first: python -m shards.pack --voc VOCDEVKIT | --coco ROOT | --labels CSV --images DIR " \
           f"--out {shards_dir}"
    if not path.is_file():
        raise ManifestError(f"{path} not found: {shards_dir} is not a shard folder; {hint}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); {hint}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise ManifestError(f"{path} has no 'splits' mapping; {hint}")
    try:
        class_list(manifest)
    except ClassListError as err:
        raise ManifestError(f"{path}: its class list cannot be used ({err}); {hint}") from None
    for split, record in manifest["splits"].items():
        missing = [k for k in ("count", "shards", "ids", "positives") if k not in record]
        if missing:
            raise ManifestError(f"{path}: split '{split}' lacks {', '.join(missing)}; {hint}")
        if not isinstance(record.get("labeled", True), bool):
            raise ManifestError(f"{path}: split '{split}' has 'labeled': {record['labeled']!r}, "
                                f"expected true or false; {hint}")
        if is_labeled(record) and not isinstance(record["positives"], dict):
            raise ManifestError(f"{path}: split '{split}' is labeled but its 'positives' is "
                                f"{record['positives']!r}, not a per-class count; {hint}")
    return manifest


def split_entry(manifest: dict, split: str, shards_dir: str | Path) -> dict:
    """manifest['splits'][split], or an error listing the splits that exist.

    "train+val" names the union of splits (what the trainer's --train-splits train,val trains on):
    one entry whose count, shards, ids, skipped_count and positives are the parts' together, labeled
    when every part is. Parts that share an id are refused: the union would hold that image twice.
    """
    parts = split.split("+")
    missing = [part for part in parts if part not in manifest["splits"]]
    if missing:
        raise ManifestError(f"{Path(shards_dir) / MANIFEST_NAME}: no split '{missing[0]}' "
                            f"(packed: {', '.join(manifest['splits']) or 'none'})")
    if len(parts) == 1:
        return manifest["splits"][split]
    entries = [manifest["splits"][part] for part in parts]
    ids = sorted(image_id for entry in entries for image_id in entry["ids"])
    shared = sorted({a for a, b in zip(ids, ids[1:]) if a == b})
    if shared:
        raise ManifestError(f"{Path(shards_dir) / MANIFEST_NAME}: splits {', '.join(parts)} share {len(shared)} id(s) "
                            f"({', '.join(shared[:5])}): their union would hold those images twice; repack")
    labeled = all(is_labeled(entry) for entry in entries)
    return {
        "count": sum(entry["count"] for entry in entries),
        "shards": [name for entry in entries for name in entry["shards"]],
        "ids": ids,
        "labeled": labeled,
        "positives": {name: sum(entry["positives"][name] for entry in entries)
                      for name in class_list(manifest).names} if labeled else None,
        "skipped_count": sum(entry.get("skipped_count", 0) for entry in entries),
        "years": sorted({year for entry in entries for year in entry.get("years", [])}),
    }
