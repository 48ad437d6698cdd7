"""REPORT.md from run directories alone: `python -m trainer.report RUNS --out REPORT.md`.

RUNS is the --runs of trainer.suite: the report's runs (trainer.reference) fill the Part 1A and
ablation tables beside the report's figures, every other run directory under RUNS gets its own
table; a run of the suite that is missing or unfinished keeps its row, marked. Or compare any
runs side by side: `python -m trainer.report RUN_A RUN_B ... --out CMP.md`.

Read per run: summary.json (per-class AP too), history.csv, config.yaml (and the recipe file its
config.yaml names, to say how the run differs from it). Pictures are PNGs beside the markdown
file, named after it (REPORT-map.png, REPORT-ap.png, REPORT-<run>-loss.png, ...).
"""

from __future__ import annotations

import argparse
import sys
import typing
from datetime import datetime, timezone
from pathlib import Path

from trainer.report import figures
from trainer.rundir.atomic import atomic_write_text
from trainer.report.reference import BY_RUN, SECTIONS
from trainer.report.tables import decisions_table, per_class_table, provenance_table, results_table, scored
from trainer.report.runs import MISSING, RunFiles, is_run_dir, read_run, runs_under
from trainer.suite.catalog import SUITES_FILE, SuiteError, load_suites, shown_path

HOW_TO_READ = """\
**How to read.** *ours* is summary.json's `test_map`: per-class `sklearn.metrics.average_precision_score`
over every test image, mean over the classes with test positives (docs/SPEC.md, the headline metric);
*ours VOC07* is `test_map_voc07`, the devkit's 11-point AP with difficult-only images ignored. Both are
the figures of the model that wrote submission.csv, named in *from*: `final` = the weights after the
last epoch (the trainer's default, `--test-with final`), `best-val` = the epoch with the best val mAP
(`--test-with best`). *best-val model* is the test mAP of the best-val-mAP epoch's weights, which the
trainer scores too when they differ from the final ones. The report's ablation rows 1-5 give the **best
test mAP per row** (the best over the run's epochs, picked on test); our closest figure is *best-val
model* (picked on val, not test); Part 1A and the final network give the report's test mAP.
Every number of ours is its summary.json value with 4 decimals; the report's are as docs/SPEC.md prints
them. *procs* = processes (the recipes' batch of 50 is per process).
"""


class ReportError(ValueError):
    """Bad input: one line naming the path."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ReportError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer.report", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("paths", nargs="+", metavar="RUNS | RUN",
                        help="a suite's --runs directory, or run directories")
    parser.add_argument("--out", required=True, help="the markdown file to write (pictures go beside it)")
    parser.add_argument("--suite", default="report",
                        help="with RUNS: the suite whose runs are expected there; a missing one is marked (default report)")
    parser.add_argument("--suites", default=str(SUITES_FILE), help=f"suites file (default {shown_path(SUITES_FILE)})")
    return parser


OTHER_RUNS = "Runs not in the report"


def _suites(path: str) -> dict:
    try:
        return load_suites(path)
    except SuiteError as err:
        raise ReportError(str(err)) from None


def collect(paths: list[str], suite: str, suites_file: str) -> tuple[str, dict[str, list[RunFiles]], str]:
    """(title, {table title: runs}, what was read) for a runs root (one directory that is no run) or runs."""
    if len(paths) == 1 and Path(paths[0]).is_dir() and not is_run_dir(paths[0]):
        root, suites = Path(paths[0]), _suites(suites_file)
        if suite not in suites:
            raise ReportError(f"--suite: unknown suite '{suite}' in {suites_file}; known: {', '.join(suites)}")
        expected = [run.name for run in suites[suite].runs]  # marked when missing
        names = dict.fromkeys([*expected, *(path.name for path in runs_under(root))])
        tables: dict[str, list[RunFiles]] = {title: [] for title in (*SECTIONS, OTHER_RUNS)}
        for name in names:
            tables[BY_RUN[name].section if name in BY_RUN else OTHER_RUNS].append(read_run(root / name))
        return "The reference report's runs and ours", {title: runs for title, runs in tables.items() if runs}, \
            f"the run directories under `{root}` (suite `{suite}` expected there)"
    for path in paths:
        if not Path(path).is_dir():
            raise ReportError(f"{path}: no such directory; give run directories (trainer/main.py --out) or one --runs")
        if not is_run_dir(path):
            raise ReportError(f"{path}: not a run directory (no config.yaml, history.csv or summary.json in it)")
    runs = [read_run(path) for path in paths]
    for run in runs:  # two runs/simple from two places: say which is which
        if sum(other.name == run.name for other in runs) > 1:
            run.label = f"{run.path.parent.name}/{run.name}"
    return "Runs compared", {"Runs": runs}, "the run directories " + ", ".join(f"`{path}`" for path in paths)


def _figure_kinds(runs: list[RunFiles]) -> list[str]:
    """What the report column of this table is, row by row where the kinds differ."""
    kinds = {BY_RUN[run.name].kind: [] for run in runs if run.name in BY_RUN}
    for run in runs:
        if run.name in BY_RUN:
            kinds[BY_RUN[run.name].kind].append(run.shown)
    if not kinds:
        return []
    said = "; ".join(f"{kind} ({', '.join(names)})" for kind, names in kinds.items())
    return [f"*report* (docs/SPEC.md): {said}.\n"]


def write_report(paths: list[str], out: Path, suite: str = "report", suites_file: str = str(SUITES_FILE)) -> Path:
    """Write the markdown file and its pictures; returns its path."""
    title, tables, source = collect(paths, suite, suites_file)
    # the report's own recipes (this project's suites file), to say when a report-named run used another
    report_recipes = {run.name: run.recipe for run in _suites(str(SUITES_FILE))["report"].runs}
    runs = [run for group in tables.values() for run in group]
    stem = out.with_suffix("")
    picture = lambda suffix: Path(f"{stem}-{suffix}.png")  # noqa: E731  beside the markdown, named after it
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    found = [run for run in runs if run.state != MISSING]
    lines = [f"# {title}\n",
             f"Written by `python -m trainer.report` on {now} from {source}: {len(found)} of {len(runs)} runs found, "
             f"{sum(run.summary is not None for run in runs)} finished. The report's figures: docs/SPEC.md "
             "(Reference results).\n", HOW_TO_READ]
    for title, group in tables.items():
        lines += [f"## {title}\n", *_figure_kinds(group), results_table(group, report_recipes)]
    if any(run.name in BY_RUN or run.summary for run in runs):
        lines += ["## Test mAP: ours vs the report\n",
                  f"![test mAP per run, ours vs the report]({figures.map_bars(runs, picture('map')).name})\n"]
    with_ap = scored(runs)
    if with_ap:
        lines += ["## Per-class test AP\n", "Test AP per class (sklearn) of the model each run's figures come from; "
                  "`-`: no test positive of that class (left out of the mean).\n", per_class_table(with_ap),
                  f"![per-class test AP]({figures.ap_heatmap(with_ap, picture('ap')).name})\n"]
        lines += ["## Thresholded and top-3 test metrics\n",
                  "The figures of ML-GCN/ASL beside mAP, from the same test scores: a class is predicted when its "
                  "score is >= 0.5 (@0.5) or among the image's 3 highest (top-3). CP/CR: mean per-class precision/"
                  "recall over classes with positives, CF1 their F1; OP/OR/OF1 over all predictions "
                  "(docs/training.md, Metrics).\n", decisions_table(with_ap)]
    with_history = [run for run in runs if run.history]
    if with_history:
        lines.append("## Curves\n")
        for run in with_history:
            name = run.shown.replace("/", "__")
            loss, mean_ap = figures.curves(run, picture(f"{name}-loss"), picture(f"{name}-map"))
            lines.append(f"**{run.shown}**\n\n![{run.shown} loss]({loss.name}) ![{run.shown} mAP]({mean_ap.name})\n")
    lines += ["## Provenance\n", "Commit and versions from each run's config.yaml (written when it last started), "
              "the date from its summary.json.\n", provenance_table(runs)]
    return atomic_write_text(out, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        out = Path(args.out)
        if out.suffix != ".md":
            raise ReportError(f"--out {out}: give a markdown file name ending in .md")
        path = write_report(args.paths, out, args.suite, args.suites)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} and its pictures ({path.with_suffix('')}-*.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
