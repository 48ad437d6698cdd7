"""A run's result files: history.csv, submission.csv, per_class_ap.csv, summary.json, and the
per-class AP table printed at the end (the plots are in trainer.rundir.plots).

Every file is written to a temporary name in the same directory and then renamed, so a
run killed while writing never leaves a half-written file under the final name. Every CSV
goes through one writer (`csv_text`: LF line ends).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from trainer.rundir.atomic import atomic_write_text


@dataclass
class EpochRow:
    """One row of history.csv, its columns in this order. Evaluation columns are None (empty cells)
    at epochs without evaluation."""

    epoch: int
    train_loss: float  # mean over every batch of every rank, those before a resume included
    val_loss: float | None = None
    val_map: float | None = None
    train_map: float | None = None
    lr: float = 0.0  # the rate the epoch started with (cosine moves it every update)
    seconds: float = 0.0  # wall time of the epoch (training + evaluation)
    images_per_s: float = 0.0  # training images of all processes per second of training
    ema_val_map: float | None = None  # --ema-decay: the val mAP of the average of the weights

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """The row as the run's console line: `epoch 3 train_loss 0.2051 ...`, empty cells left out."""
        return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in dataclasses.asdict(self).items() if v is not None)


HISTORY_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EpochRow))


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_history(path: str | os.PathLike, rows: Sequence[Mapping]) -> Path:
    """history.csv: exactly these rows (one per finished epoch). The trainer rewrites it from the
    run state only after that state's checkpoint is on disk, so a run killed at any moment and
    resumed lists every epoch exactly once."""
    return atomic_write_text(path, history_text(rows))


def history_text(rows: Sequence[Mapping]) -> str:
    """What write_history writes (for writing it together with other files: trainer.rundir.atomic)."""
    cells = [["" if row.get(col) is None else row[col] for col in HISTORY_COLUMNS] for row in rows]
    return csv_text(HISTORY_COLUMNS, cells)


def write_submission(path: str | os.PathLike, ids: Sequence[str], scores: np.ndarray, names: Sequence[str]) -> Path:
    """submission.csv per SPEC: header `id,<class names>` (VOC: `id,aeroplane,...,tvmonitor`), one
    row per image, sorted by id, scores = sigmoid probabilities.

    ids must be strings ("000001"): an int id would lose its leading zeros. Scores are
    written with 9 significant digits, which reproduces float32 values exactly, so AP
    recomputed from the file equals AP computed in memory.
    """
    scores = np.asarray(scores)
    if scores.shape != (len(ids), len(names)):
        raise ValueError(f"{path}: scores must be [{len(ids)} ids, {len(names)} classes], "
                         f"got {scores.shape}")
    not_str = [i for i in ids if not isinstance(i, str)][:10]
    if not_str:
        raise TypeError(f"{path}: ids must be strings (VOC ids keep leading zeros), got {not_str!r}")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"{path}: {len(duplicates)} ids appear more than once (first: "
                         f"{duplicates[:10]}); each test image must have exactly one row")
    if not (np.all(np.isfinite(scores)) and scores.min(initial=0) >= 0 and scores.max(initial=0) <= 1):
        raise ValueError(f"{path}: scores must be probabilities in [0, 1] (apply sigmoid to the logits)")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    rows = [[ids[i], *(format(float(s), ".9g") for s in scores[i])] for i in order]
    return atomic_write_text(path, csv_text(["id", *names], rows))


def _number(value: float | None, digits: int = 6) -> str:
    """A missing value is an empty cell, never 0: 0 would read as a real (terrible) AP."""
    return "" if value is None else f"{value:.{digits}f}"


def four(value: float | None) -> str:
    """A figure as in summary.json, 4 decimals; '-' for none (never 0, which would read as a real AP)."""
    return "-" if value is None else f"{value:.4f}"


def clock(seconds: float | None) -> str:
    """A duration as h:mm:ss; '-' for none."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def write_per_class_ap(path: str | os.PathLike, metrics: Mapping) -> Path:
    """per_class_ap.csv: class, positives (images with state 1), ap (sklearn, the headline),
    ap_voc07 (11-point, difficult ignored), then precision, recall and f1 at the 0.5 threshold
    (trainer.evaluation.label_metrics; after the AP columns, so readers of the first four keep
    working). Classes without positives have empty AP, recall, precision and F1 cells."""
    per_class = metrics["per_class"]
    rows = [
        [name, metrics["positives"][c], _number(metrics["ap"][c]), _number(metrics["ap_voc07"][c]),
         *(_number(per_class[key][c]) for key in DECISION_COLUMNS)]
        for c, name in enumerate(metrics["classes"])
    ]
    return atomic_write_text(path, csv_text(["class", "positives", "ap", "ap_voc07", *DECISION_COLUMNS], rows))


DECISION_COLUMNS: tuple[str, ...] = ("precision", "recall", "f1")  # per_class_ap.csv's, at the 0.5 threshold


def decision_line(name: str, means: Mapping) -> str:
    """`thresholded: CP 0.7000 CR ... OF1 0.6500` ('-' where a figure is None)."""
    return f"{name}: " + " ".join(f"{key} {four(means[key])}" for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"))


def ap_table(metrics: Mapping, title: str = "Per-class AP") -> Table:
    """A rich table of per-class AP and precision/recall/F1 at 0.5, with the two mAPs in the last row
    and the thresholded and top-3 CP..OF1 in the caption."""
    table = Table(title=title, caption="\n".join(
        [decision_line("thresholded (score >= 0.5)", metrics["thresholded"]),
         decision_line("top-3", metrics["top3"])]))
    table.add_column("class")
    table.add_column("positives", justify="right")
    table.add_column("AP (sklearn)", justify="right")
    table.add_column("AP VOC07 11-pt", justify="right")
    for header in ("P@0.5", "R@0.5", "F1@0.5"):
        table.add_column(header, justify="right")
    per_class = metrics["per_class"]
    for c, name in enumerate(metrics["classes"]):
        if metrics["ap"][c] is None:
            table.add_row(name, str(metrics["positives"][c]), *["[dim]missing[/dim]"] * 5)
        else:
            table.add_row(name, str(metrics["positives"][c]), four(metrics["ap"][c]), four(metrics["ap_voc07"][c]),
                          *(four(per_class[key][c]) for key in DECISION_COLUMNS))
    table.add_section()
    missing = f" ({len(metrics['missing'])} missing, left out)" if metrics["missing"] else ""
    table.add_row(f"[bold]mAP[/bold]{missing}", "", four(metrics["map"]), four(metrics["map_voc07"]))
    return table


def _json_default(value: object) -> object:
    """numpy scalars/arrays and paths, which end up in summaries, as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"summary value of type {type(value).__name__} is not JSON serializable: {value!r}")


def write_summary(path: str | os.PathLike, summary: Mapping) -> Path:
    """summary.json, written atomically (temp file + rename)."""
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"
    return atomic_write_text(path, text)
