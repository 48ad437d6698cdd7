"""loss.png and map.png from a run's history rows (matplotlib, no pyplot state)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from trainer.rundir.atomic import atomic_write
from trainer.rundir.layout import LOSS_PLOT, MAP_PLOT

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def _figure(ylabel: str, title: str, curves: list[tuple[str, str]], rows: Sequence[Mapping],
            log_scale: bool = False) -> Figure:
    # Imported here, not at the top: ~0.7 s of every run's start, for plots drawn at its end.
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    # Figure without pyplot: no global backend or figure registry, nothing to close.
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    all_epochs = len(rows)
    for key, label in curves:
        epochs, values = _series(rows, key)
        if not values:
            continue
        if len(values) < all_epochs:
            # Evaluated at some epochs only: the points are the measurements, the dotted line
            # between them is no measurement (a straight line would read as one).
            ax.plot(epochs, values, linestyle=":", marker="o", markersize=6,
                    label=f"{label} (evaluated at {len(values)} of {all_epochs} epochs)")
        else:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, never 2.5
    if log_scale:
        ax.set_yscale("log")
        for axis_ticks in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_ticks(FormatStrFormatter("%.2g"))  # 0.6, not 6 x 10^-1
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both" if log_scale else "major")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def history_figures(history_rows: Sequence[Mapping], title: str = "") -> tuple[Figure, Figure]:
    """The loss and mAP figures of `plot_history`, unsaved."""
    loss = _figure("loss per image (log scale)", f"Loss: {title}" if title else "Loss",
                   [("train_loss", "train"), ("val_loss", "val")], history_rows, log_scale=True)
    mean_ap = _figure("mAP (sklearn AP, mean over classes)", f"mAP: {title}" if title else "mAP",
                      [("train_map", "train"), ("val_map", "val")], history_rows)
    return loss, mean_ap


def plot_history(history_rows: Sequence[Mapping], out_dir: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """loss.png (train loss every epoch, val loss where evaluated) and map.png (train and
    val mAP at evaluated epochs) from history rows with keys epoch, train_loss, val_loss,
    train_map, val_map (numbers, or None/"" where not evaluated). `title` names the run, its
    model and result (a plot handed in alone must say what it shows).

    The loss axis is logarithmic: the first epochs' loss (often 10x the later one) would
    otherwise flatten the rest of the curve.
    """
    out_dir = Path(out_dir)
    paths = (out_dir / LOSS_PLOT, out_dir / MAP_PLOT)
    for path, fig in zip(paths, history_figures(history_rows, title)):
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))
    return paths
