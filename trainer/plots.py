"""loss.png and map.png from a run's history rows (matplotlib, no pyplot state)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trainer.atomic import atomic_write


def _series(rows: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the rows where key holds a number. history.csv leaves a cell
    empty at epochs without evaluation; rows read back from it hold strings."""
    epochs, values = [], []
    for row in rows:
        value = row.get(key)
        if value is None or value == "":
            continue
        value = float(value)
        if not math.isnan(value):
            epochs.append(float(row["epoch"]))
            values.append(value)
    return epochs, values


def _save_plot(path: Path, ylabel: str, title: str, curves: list[tuple[str, str]],
               rows: Sequence[Mapping]) -> Path:
    # Figure without pyplot: no global backend or figure registry, nothing to close.
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for key, label in curves:
        epochs, values = _series(rows, key)
        if values:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, never 2.5
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_history(history_rows: Sequence[Mapping], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """loss.png (train loss every epoch, val loss where evaluated) and map.png (train and
    val mAP at evaluated epochs) from history rows with keys epoch, train_loss, val_loss,
    train_map, val_map (numbers, or None/"" where not evaluated)."""
    out_dir = Path(out_dir)
    loss = _save_plot(out_dir / "loss.png", "loss per image", "Loss",
                      [("train_loss", "train"), ("val_loss", "val")], history_rows)
    mean_ap = _save_plot(out_dir / "map.png", "mAP (sklearn AP, mean over classes)", "mAP",
                         [("train_map", "train"), ("val_map", "val")], history_rows)
    return loss, mean_ap
