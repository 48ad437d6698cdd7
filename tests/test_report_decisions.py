"""REPORT.md's table of the thresholded and top-3 figures: each scored run's summary.json numbers,
'-' for a summary written before they existed, no row for a run without test AP (fast, no training)."""

from __future__ import annotations

from pathlib import Path

from trainer.report.runs import FINISHED, RunFiles
from trainer.report.tables import decisions_table


def _run(name: str, summary: dict) -> RunFiles:
    return RunFiles(name=name, path=Path("/nowhere") / name, state=FINISHED, summary=summary)


def test_rows_are_the_summaries_numbers():
    thresholded = {"CP": 0.71234, "CR": 0.5, "CF1": 0.59, "OP": 0.8, "OR": 0.45, "OF1": 0.576}
    top3 = {"CP": 0.4, "CR": 0.9, "CF1": None, "OP": 0.3, "OR": 0.95, "OF1": 0.456}
    new = _run("new", {"per_class_ap": {"cat": 0.5}, "test_thresholded": thresholded, "test_top3": top3})
    old = _run("old", {"per_class_ap": {"cat": 0.5}})  # a summary.json from before these figures
    hidden = _run("hidden", {"per_class_ap": None, "test_thresholded": None})  # test labels hidden
    lines = decisions_table([new, old, hidden]).splitlines()
    assert lines[0].startswith("| run | @0.5 CP | @0.5 CR | @0.5 CF1 | @0.5 OP |") and "top-3 OF1 |" in lines[0]
    assert lines[2] == ("| new | 0.7123 | 0.5000 | 0.5900 | 0.8000 | 0.4500 | 0.5760 "
                        "| 0.4000 | 0.9000 | - | 0.3000 | 0.9500 | 0.4560 |")
    assert lines[3] == "| old |" + " - |" * 12
    assert len(lines) == 4  # no row for the run without test labels
