"""history.csv: one row per finished epoch, written by the main process only.

A row is appended only after that epoch's checkpoint is on disk; on resume the file is
rewritten from the rows stored in the checkpoint, so a run killed at any moment and resumed
lists every epoch exactly once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer.atomic import atomic_write_text

# seconds: wall time of the epoch (training + evaluation); images_per_s: training images of all
# processes per second of training. Evaluation columns are empty at epochs without evaluation.
COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_map", "train_map", "lr", "seconds", "images_per_s")


def _cells(row: Mapping) -> list[str]:
    return ["" if row.get(col) is None else str(row[col]) for col in COLUMNS]


def append_row(path: str | os.PathLike, row: Mapping) -> None:
    """Append one epoch; writes the header when the file is new."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow(_cells(row))


def rewrite(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Replace the file with exactly these rows (temp file + rename: never half-written)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(row) for row in rows)
    atomic_write_text(path, text.getvalue())
