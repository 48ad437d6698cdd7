"""history.csv: one row per finished epoch, written by the main process only.

The file is rewritten (atomically) from the rows stored in the run state, only after that
state's checkpoint is on disk, so a run killed at any moment and resumed lists every epoch
exactly once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence

from trainer.atomic import atomic_write_text

# seconds: wall time of the epoch (training + evaluation); images_per_s: training images of all
# processes per second of training. Evaluation columns are empty at epochs without evaluation.
COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_map", "train_map", "lr", "seconds", "images_per_s")


def _cells(row: Mapping) -> list[str]:
    return ["" if row.get(col) is None else str(row[col]) for col in COLUMNS]


def rewrite(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Replace the file with exactly these rows (temp file + rename: never half-written)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(row) for row in rows)
    atomic_write_text(path, text.getvalue())
