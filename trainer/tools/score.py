"""Score a submission CSV against the labels of a split, with the trainer's own metric.

  python -m trainer.score SUBMISSION.csv --voc PATH | --shards DIR [--split test] [--json OUT]

--voc takes what `python -m shards.pack --voc` takes: a VOCdevkit folder, its VOC2007 folder,
or VOCtest_06-Nov-2007.tar (read in place); --shards a folder packed by shards.pack (VOC, COCO or
a labels CSV: the header then follows the class list of its manifest.json). Prints the
per-class AP table and both mAPs, "map" (sklearn AP, the headline) and "map_voc07" (11-point,
difficult-only images ignored), and the thresholded (score >= 0.5) and top-3 CP, CR, CF1, OP, OR,
OF1, computed by trainer.evaluation.metrics as in a run: the submission.csv a run writes scores to
exactly that run's test figures. --json OUT also writes them as JSON. The thresholded figures read
the scores as probabilities: a submission on another scale still ranks right (mAP) but decides wrong.

Refused with exit status 2 and one "error:" line: a missing or unreadable file; a header that
is not exactly id,<the classes in order> (VOC: id,aeroplane,...,tvmonitor, docs/SPEC.md); a row
without one cell per column;
a score that is not a finite number (any finite real is fine: scores are only ranked); an id
twice, an id not in the split, or an image of the split without a row; a split the source
does not have.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from shards.classes import VOC, ClassList, class_list
from shards.labels import LabelError, first_ids, shard_split_labels, voc_split_labels
from shards.manifest import ManifestError, load_manifest
from shards.sources import SourceError
from trainer.faults.usage import OneLineParser, refuse

class SubmissionError(ValueError):
    """A submission that cannot be scored; the message names the file, line, id or column."""


@dataclass(frozen=True)
class Submission:
    ids: list[str]
    lines: list[int]  # line of each row in the file, for messages
    scores: np.ndarray  # float64 [rows, classes], in the class list's order



def _check_header(path: Path, header: list[str], expected: list[str]) -> None:
    if header == expected:
        return
    wrong = next((i for i, (got, want) in enumerate(zip(header, expected)) if got != want), None)
    if wrong is not None:
        problem = f"column {wrong + 1} is {header[wrong]!r}, expected {expected[wrong]!r}"
    elif len(header) < len(expected):
        problem = f"lacks {len(expected) - len(header)} column(s): {first_ids(expected[len(header):])}"
    else:
        problem = f"has {len(header) - len(expected)} column(s) after {expected[-1]}: {first_ids(header[len(expected):])}"
    if "__background__" in header:
        hint = "; drop the __background__ column (logit 0 is never scored)"
    elif sorted(header) == sorted(expected):
        hint = "; every column is there, in another order: reorder them"
    else:
        hint = ""
    raise SubmissionError(f"{path}: header {problem}; the first line must be exactly {_spelled(expected)} "
                          f"(the class order of the labels' class list){hint}")


def _spelled(header: list[str]) -> str:
    return ",".join(header) if len(header) <= 4 else f"{header[0]},{header[1]},...,{header[-1]}"


def _parse(path: Path, fh: TextIO, classes: ClassList) -> Submission:
    expected = ["id", *classes.names]
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise SubmissionError(f"{path}: the file is empty; expected the header {_spelled(expected)} "
                              "and one row per image")
    _check_header(path, header, expected)
    scores, first_line = [], {}  # first_line: id -> its line, in file order
    for row in reader:
        line = reader.line_num
        if not row:
            continue  # a blank line, e.g. a trailing one: nothing to score, nothing lost
        if len(row) != len(expected):
            raise SubmissionError(f"{path}: line {line} has {len(row)} cells, expected {len(expected)} "
                                  "(id and one score per class)")
        image_id = row[0]
        if not image_id:
            raise SubmissionError(f"{path}: line {line} has an empty id; give the image's id, e.g. VOC's 000001")
        if image_id in first_line:
            raise SubmissionError(f"{path}: id {image_id} is on lines {first_line[image_id]} and {line}; "
                                  "each image needs exactly one row")
        first_line[image_id] = line
        values = []
        for name, cell in zip(classes.names, row[1:]):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise SubmissionError(f"{path}: line {line} (id {image_id}), column {name}: {cell!r} is not a finite "
                                      "number; every score must be one (any scale: scores are only ranked)")
            values.append(value)
        scores.append(values)
    return Submission(list(first_line), list(first_line.values()),
                      np.asarray(scores, dtype=np.float64).reshape(len(scores), classes.num_classes))


def read_submission(path: str | Path, classes: ClassList) -> Submission:
    """Parse and check a submission CSV for `classes`; raises SubmissionError naming the line, id or column."""
    path = Path(path)
    try:
        # utf-8-sig: a spreadsheet's byte-order mark must not become part of "id".
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return _parse(path, fh, classes)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file; give the CSV to score, e.g. RUN/submission.csv") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SubmissionError(f"{path}: cannot read it as a UTF-8 CSV file ({err})") from None


def align(submission: Submission, path: str | Path, split_ids: Sequence[str], split: str,
          labels_from: str) -> np.ndarray:
    """The submission's scores in `split_ids` order; every split id must have exactly one row."""
    known = set(split_ids)
    unknown = [(i, line) for i, line in zip(submission.ids, submission.lines) if i not in known]
    if unknown:
        hint = ""
        if any(i.isdigit() and i.zfill(6) in known for i, _ in unknown):
            hint = "; VOC ids keep their leading zeros (000001, not 1): a spreadsheet may have dropped them"
        named = [f"{i} (line {line})" for i, line in unknown]
        raise SubmissionError(f"{path}: {len(unknown)} id(s) are not in split '{split}' of {labels_from} "
                              f"(first: {first_ids(named)}){hint}; remove those rows, or score against the split "
                              "the submission was made for (--split)")
    row_of = {image_id: k for k, image_id in enumerate(submission.ids)}
    missing = [i for i in split_ids if i not in row_of]
    if missing:
        raise SubmissionError(f"{path}: {len(missing)} of the {len(split_ids)} images of split '{split}' have no "
                              f"row (first: {first_ids(missing)}); every image of the split needs exactly one row")
    return submission.scores[[row_of[i] for i in split_ids]]


def scores_json(metrics: dict, images: int) -> dict:
    """The --json document: means, then per class (class-list order; null for a class without positives),
    then the thresholded and top-3 CP..OF1 and the per-class precision, recall and F1 at 0.5."""
    per_class = {key: dict(zip(metrics["classes"], metrics[key])) for key in ("ap", "ap_voc07", "positives")}
    decisions = {key: dict(zip(metrics["classes"], values)) for key, values in metrics["per_class"].items()}
    return {"map": metrics["map"], "map_voc07": metrics["map_voc07"], **per_class, "images": images,
            "thresholded": metrics["thresholded"], "top3": metrics["top3"], **decisions}



def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m trainer.score", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", type=Path, metavar="SUBMISSION.csv",
                        help="id,<classes>, one row per image (a run's submission.csv)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--voc", type=Path, metavar="PATH",
                        help="labels from a VOCdevkit folder, its VOC2007 folder or VOCtest_06-Nov-2007.tar")
    labels.add_argument("--shards", type=Path, metavar="DIR", help="labels from a folder packed by shards.pack")
    parser.add_argument("--year", metavar="YEAR",
                        help="with --voc: the VOC<YEAR> tree of a VOCdevkit that holds several (e.g. 2007)")
    parser.add_argument("--split", default="test", help="split to score against (default test)")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="also write map, map_voc07, per-class AP and the thresholded/top-3 figures here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 when scored, 2 (and one 'error:' line on stderr) when refused."""
    args = _parser().parse_args(argv)
    labels_from = f"--voc {args.voc}" if args.voc is not None else f"--shards {args.shards}"
    try:
        if args.year is not None and args.voc is None:
            raise SourceError("--year chooses a tree of --voc; --shards knows its own years")
        classes = VOC if args.voc is not None else class_list(load_manifest(args.shards))
        submission = read_submission(args.submission, classes)
        if args.voc is not None:
            ids, states = voc_split_labels(args.voc, args.split, args.year)
        else:
            ids, states = shard_split_labels(args.shards, args.split)
        scores = align(submission, args.submission, ids, args.split, labels_from)
    except (SubmissionError, LabelError, SourceError, ManifestError) as err:
        return refuse(str(err))
    except (OSError, tarfile.TarError) as err:
        return refuse(f"{labels_from}: cannot read it ({err}); check the path and its permissions")

    # Deferred: sklearn and matplotlib take seconds to import, and a refusal should come at once.
    from rich.console import Console

    from trainer.evaluation.metrics import average_precisions
    from trainer.rundir.outputs import ap_table, write_summary

    metrics = average_precisions(states, scores, classes.names)
    console = Console(highlight=False)
    console.print(ap_table(metrics, title=f"Split '{args.split}' scored from {args.submission}"))
    means = [f"{key} {'-' if metrics[key] is None else format(metrics[key], '.6f')}" for key in ("map", "map_voc07")]
    console.print(f"{means[0]} (sklearn AP, the headline)   {means[1]} (VOC07 11-point, difficult ignored)   "
                  f"{len(ids)} images", soft_wrap=True)
    if args.json is not None:
        try:
            write_summary(args.json, scores_json(metrics, len(ids)))
        except OSError as err:
            return refuse(f"--json {args.json}: cannot write it ({err}); pick a writable path")
    return 0



if __name__ == "__main__":
    sys.exit(main())
