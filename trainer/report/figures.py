"""REPORT.md's pictures (PNG, written beside it): test mAP ours vs the report, per-class AP heatmap,
each run's loss and mAP curves (trainer.rundir.plots.history_figures, as the run's own loss.png/map.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from trainer.rundir.atomic import atomic_write
from trainer.rundir.plots import history_figures
from trainer.report.reference import BY_RUN
from trainer.report.runs import RunFiles, class_names


def save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


def map_bars(runs: Sequence[RunFiles], path: Path) -> Path:
    """Grouped bars per run: our test mAP (sklearn) and the report's figure where it has one."""
    names = [run.shown for run in runs]
    ours = [(run.summary or {}).get("test_map") for run in runs]
    report = [BY_RUN[run.name].value if run.name in BY_RUN else None for run in runs]
    fig = Figure(figsize=(max(6.0, 0.8 * len(runs) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    x, width = np.arange(len(runs)), 0.4
    for offset, values, label, color in ((-width / 2, ours, "ours (test mAP, sklearn AP)", "tab:blue"),
                                         (width / 2, report, "the report (docs/SPEC.md)", "tab:gray")):
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + offset, heights, width, label=label, color=color)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                            fontsize=7)
    for i, run in enumerate(runs):
        if ours[i] is None:  # marked, not dropped
            ax.annotate(run.status().split(":")[0], (x[i] - width / 2, 0.01), ha="center", va="bottom", fontsize=7,
                        rotation=90, color="tab:red")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test mAP")
    ax.set_title("Test mAP per run: ours vs the report (report ablation rows: best test mAP)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def ap_heatmap(runs: Sequence[RunFiles], path: Path) -> Path:
    """Per-class test AP, classes down and runs across; blank where a class had no test positive."""
    names = class_names(list(runs))
    values = np.array([[np.nan if run.summary["per_class_ap"].get(c) is None else run.summary["per_class_ap"][c]
                        for run in runs] for c in names], dtype=float)
    fig = Figure(figsize=(max(5.0, 0.9 * len(runs) + 3), 8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (row, col), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(runs)), [run.shown for run in runs], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("Per-class test AP (sklearn); blank: no test positive", fontsize=10)
    fig.colorbar(image, ax=ax, label="AP")
    return save(fig, path)


def curves(run: RunFiles, loss_path: Path, map_path: Path) -> tuple[Path, Path]:
    """The run's loss and mAP curves from its history.csv, titled like the run's own plots."""
    test_map = (run.summary or {}).get("test_map")
    result = "unfinished" if run.summary is None else \
        ("test labels hidden" if test_map is None else f"test mAP {test_map:.4f}")
    title = f"{run.shown} ({run.settings.get('model', '?')}), {result}"
    loss, mean_ap = history_figures(run.history, title)
    return save(loss, loss_path), save(mean_ap, map_path)
