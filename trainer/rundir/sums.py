"""sha256 of every file of a checkpoint, recorded at save time and checked before a resume.

As shards/manifest.json does for shards (shards/verify.py): a checkpoint truncated or changed
after it was saved (a disk that filled up under a copy, a bad block, a partial rsync) is named
with the file that differs, instead of failing deep inside safetensors with `invalid header
length` and no path. `checksums.json` is the last file written before the folder is renamed
into place, and covers every other file in it (trainer_state.json included).

Checkpoints saved before the sums existed have no checksums.json: they are checked only
cheaply (the state file and the weights file's header read), and reported as unverified.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from shards.verify import file_sha256
from trainer.rundir.atomic import atomic_write_text
from trainer.rundir.layout import SUMS_FILE, WEIGHTS_FILE



def write_sums(directory: Path) -> None:
    """Record the sha256 of every file in `directory` (flat, as save_state writes it)."""
    sums = {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != SUMS_FILE}
    atomic_write_text(directory / SUMS_FILE, json.dumps({"sha256": sums}, indent=1))


def has_sums(directory: Path) -> bool:
    return (directory / SUMS_FILE).is_file()


def damage(directory: Path) -> str | None:
    """Why the checkpoint in `directory` cannot be trusted ('FILE: why'), or None when it can:
    every recorded file present with its sha256 (with sums), or a readable weights header (without)."""
    if not has_sums(directory):
        return _header_damage(directory / WEIGHTS_FILE)
    try:
        recorded = json.loads((directory / SUMS_FILE).read_text())["sha256"]
        if not isinstance(recorded, dict):
            raise TypeError("sha256 is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{SUMS_FILE}: unreadable ({err})"
    for name, digest in sorted(recorded.items()):
        path = directory / name
        if not path.is_file():
            return f"{name}: missing"
        if file_sha256(path) != digest:
            return f"{name}: sha256 differs from {SUMS_FILE} (truncated or changed since it was saved)"
    return None


def _header_damage(weights: Path) -> str | None:
    # Without sums: safetensors checks its header and that the data covers the file (cheap: no tensor read).
    if not weights.is_file():
        return f"{weights.name}: missing"
    try:
        with safe_open(str(weights), "pt"):
            pass
    except (SafetensorError, OSError) as err:
        return f"{weights.name}: {err}"
    return None
