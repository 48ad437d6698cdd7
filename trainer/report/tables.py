"""REPORT.md's tables (markdown) from run directories read by trainer.runs.

Every figure of ours is summary.json's number with 4 decimals (f"{x:.4f}"); the report's are
SPEC's text (trainer.reference). A run that is missing or unfinished keeps its row, marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainer.report.reference import BY_RUN
from trainer.rundir.outputs import clock, four
from trainer.report.runs import FINISHED, MISSING, RunFiles, class_names
from trainer.config import ConfigError
from trainer.suite.catalog import describe_changes, differences, shown_path

RESULT_HEADER = ("run", "report", "ours", "ours VOC07", "from", "best-val model", "epochs", "wall time", "procs",
                 "device", "state and notes")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: object) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _best_val(summary: dict) -> str:
    """Test mAP of the best-val-mAP epoch's weights (the trainer scores them when they differ from the final)."""
    if summary.get("best_model"):
        return f"{four(summary['best_model']['test_map'])} (epoch {summary['best_model']['epoch']})"
    epoch = summary.get("best_val_epoch")
    if epoch is None:
        return "-"
    if summary.get("submission_model") == "final" and epoch == summary.get("submission_epoch"):
        return f"= final (epoch {epoch})"
    return f"epoch {epoch} (not scored)"


def notes(run: RunFiles, expected_recipe: Path | None = None) -> str:
    """State, then how the run differs from its recipe file and anything else a reader must know."""
    said = [run.status()] if run.state != FINISHED else []
    if run.problem:
        said.append(f"unreadable: {run.problem}")
    if run.state == MISSING:
        return "; ".join(said)
    settings, summary = run.settings, run.summary or {}
    said += _recipe_notes(settings, expected_recipe)
    world = run.record.get("world_size")
    if world and world > 1:
        said.append(f"{world} processes: global batch {world} x {settings.get('batch_size')}")
    if summary.get("debug") or settings.get("debug"):
        said.append("--debug run (3 batches per epoch)")
    if run.state == FINISHED and summary.get("test_map") is None:
        said.append("test labels hidden: no test mAP")
    if summary.get("missing_classes"):
        said.append(f"{len(summary['missing_classes'])} classes without test positives left out of the mean")
    return "; ".join(said) or "finished"


def _recipe_notes(settings: dict, expected_recipe: Path | None) -> list[str]:
    """How the run's settings differ from its recipe file (read again now), and whether that is the report's."""
    recipe = settings.get("config")
    if not settings:
        return ["no config.yaml"]
    if not recipe:
        return ["no recipe file (settings from flags)"]
    said = []
    if expected_recipe is not None and Path(recipe).parts[-2:] != expected_recipe.parts[-2:]:
        said.append(f"recipe {shown_path(recipe)}, not the report's {shown_path(expected_recipe)}")
    if not Path(recipe).is_file():
        return [*said, f"recipe {recipe} is not on this machine: differences unknown"]
    try:
        changed = differences(Path(recipe), settings)
    except ConfigError as err:
        return [*said, f"recipe unreadable: {err}"]
    if changed:
        said.append(f"differs from {shown_path(recipe)}: {describe_changes(changed)}")
    return said


def result_row(run: RunFiles, expected_recipe: Path | None = None) -> list[str]:
    ref = BY_RUN.get(run.name)
    report = ref.figure if ref else "-"
    summary = run.summary
    if summary is None:
        done = f"{run.epochs_done} of {run.epochs}" if run.epochs else "-"
        return [run.shown, report, "-", "-", "-", "-", done if run.state != MISSING else "-", "-",
                str(run.record.get("world_size", "-")), run.record.get("device", "-"), notes(run, expected_recipe)]
    source = "best-val" if summary.get("submission_model") == "best" else "final"
    return [run.shown, report, four(summary.get("test_map")), four(summary.get("test_map_voc07")),
            f"{source} (epoch {summary.get('submission_epoch')})", _best_val(summary), str(summary.get("epochs")),
            clock(summary.get("wall_seconds")), str(summary.get("world_size")), run.record.get("device", "-"),
            notes(run, expected_recipe)]


def results_table(runs: Sequence[RunFiles], expected: dict[str, Path] | None = None) -> str:
    """One row per run; `expected` maps a report run's name to the report's recipe file."""
    return md_table(RESULT_HEADER, [result_row(run, (expected or {}).get(run.name)) for run in runs])


def scored(runs: Sequence[RunFiles]) -> list[RunFiles]:
    """Runs with a test AP per class (finished, test labels known)."""
    return [run for run in runs if run.summary and run.summary.get("per_class_ap")]


def per_class_table(runs: Sequence[RunFiles]) -> str:
    """Classes down, runs across; '-' where a class had no test positive (left out of that mean)."""
    runs = scored(runs)
    rows = [[name, *(four(run.summary["per_class_ap"].get(name)) for run in runs)]
            for name in class_names(runs)]
    rows.append(["**mAP**", *(f"**{four(run.summary['test_map'])}**" for run in runs)])
    rows.append(["VOC07 11-point mAP", *(four(run.summary["test_map_voc07"]) for run in runs)])
    return md_table(["class", *(run.shown for run in runs)], rows)


DECISION_MEANS: tuple[str, ...] = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def decisions_table(runs: Sequence[RunFiles]) -> str:
    """Runs down; the thresholded (score >= 0.5) and top-3 CP..OF1 of each run's submission model.
    '-' for a run whose summary.json predates these figures."""
    rows = []
    for run in scored(runs):
        blocks = [run.summary.get("test_thresholded") or {}, run.summary.get("test_top3") or {}]
        rows.append([run.shown, *(four(block.get(key)) for block in blocks for key in DECISION_MEANS)])
    header = [f"{kind} {key}" for kind in ("@0.5", "top-3") for key in DECISION_MEANS]
    return md_table(["run", *header], rows)


def provenance_table(runs: Sequence[RunFiles]) -> str:
    rows = []
    for run in runs:
        if run.state == MISSING:
            rows.append([run.shown, "-", "-", "-", "-", "-", "missing"])
            continue
        git = run.record.get("git") or {}
        dirty = {True: " (dirty)", False: " (clean)", None: " (dirty: unknown)"}[git.get("dirty")]
        commit = f"{str(git.get('commit', 'unknown'))[:10]}{dirty}"
        settings, versions = run.settings, run.record.get("versions") or {}
        recipe = shown_path(settings["config"]) if settings.get("config") else "-"
        resumed = "yes" if run.record.get("resumed_from") else "no"
        rows.append([run.shown, recipe, commit, run.finished_at() or "-", settings.get("shards", "-"),
                     f"torch {versions.get('torch', '?')}", f"{run.status()}; resumed last start: {resumed}"])
    return md_table(["run", "recipe file", "commit", "finished (summary.json time)", "shards", "versions", "state"],
                    rows)
