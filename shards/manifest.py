"""manifest.json: what a shard folder holds, read by the loaders and the trainer.

{"classes": [20 names], "splits": {split: {"count", "shards", "ids", "positives"}},
 "image_policy": {...}, "samples_per_shard": int, "source": [paths], "skipped": [{"id", "split", "reason"}]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from shards.classes import CLASSES

MANIFEST_NAME = "manifest.json"


class ManifestError(FileNotFoundError):
    """A shard folder without a usable manifest.json."""


def split_record(shards: Sequence[str], ids: Sequence[str], states: Sequence[Sequence[int]]) -> dict:
    """The manifest entry of one split; `states` are the devkit labels of `ids`, in order."""
    return {
        "count": len(ids),
        "shards": list(shards),
        "ids": sorted(ids),
        # Images with at least one non-difficult instance: the positives of the headline AP.
        "positives": {name: sum(1 for s in states if s[c] == 1) for c, name in enumerate(CLASSES)},
    }


def write_manifest(shards_dir: Path, manifest: dict) -> None:
    (shards_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def load_manifest(shards_dir: str | Path) -> dict:
    """Read SHARDS_DIR/manifest.json; errors name the path and what to do."""
    path = Path(shards_dir) / MANIFEST_NAME
    hint = f"pack the data first: python -m shards.pack --voc VOCDEVKIT --out {shards_dir}"
    if not path.is_file():
        raise ManifestError(f"{path} not found: {shards_dir} is not a shard folder; {hint}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); {hint}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise ManifestError(f"{path} has no 'splits' mapping; {hint}")
    if manifest.get("classes") != list(CLASSES):
        raise ManifestError(f"{path} was packed for classes {manifest.get('classes')}, "
                            f"not the VOC classes this code uses; {hint}")
    for split, record in manifest["splits"].items():
        missing = [k for k in ("count", "shards", "ids", "positives") if k not in record]
        if missing:
            raise ManifestError(f"{path}: split '{split}' lacks {', '.join(missing)}; {hint}")
    return manifest


def split_entry(manifest: dict, split: str, shards_dir: str | Path) -> dict:
    """manifest['splits'][split], or an error listing the splits that exist."""
    if split not in manifest["splits"]:
        raise ManifestError(f"{Path(shards_dir) / MANIFEST_NAME}: no split '{split}' "
                            f"(packed: {', '.join(manifest['splits']) or 'none'})")
    return manifest["splits"][split]
