"""Your own photos as a shards.items.Plan: `python -m shards.pack --labels FILE.csv --images DIR`.

One row per image, in either form Kaggle multi-label sets use:
- `id,labels`: the class names of the image separated by spaces in one cell;
- `id,<class>,<class>,...`: one 0/1 cell per class.
Either may end with a `split` column (train, val or test); without it val and test are held out by
id (shards.holdout: crc32(id) % 10 == 0 -> val, == 1 -> test, else train). An id names a file of
DIR with or without its extension (`img1` is `img1.jpg` or `img1.png`; `img1.jpg` is that file);
the sample id is the file name without its extension. `--classes FILE` (one name per line) fixes the
class order, else the names sorted; one logit per class.

A split every row of which has an empty labels cell (or only empty 0/1 cells) is packed unlabeled
(hidden labels); a row without labels in a labeled split is a negative for every class (counted in
the manifest's "all_negative"). Objects carry the positive names only ({"name"}): a CSV has no boxes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from shards.classes import ClassList, ClassListError
from shards.holdout import csv_split
from shards.items import Item, ItemSource, Plan
from shards.sources import SourceError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FORMS = ("'id,labels' (class names separated by spaces in one cell) or 'id,<class>,<class>,...' (one 0/1 cell "
         "per class); either may end with a 'split' column")


@dataclass
class _Row:
    line: int
    file: str | None  # the file in DIR, None when none matches
    positives: tuple[str, ...] | None  # None: the labels cell(s) are empty (or the row is bad)
    split: str
    filled: bool  # whether its label cells hold anything, valid or not: what tells a hidden split


@dataclass
class CsvItems(ItemSource):
    """The rows of a labels CSV and the images they name."""

    csv_path: Path
    images_dir: Path
    classes: ClassList | None = None
    rows: dict[str, _Row] = field(default_factory=dict)  # sample id -> its row
    problems: dict[str, str] = field(default_factory=dict)  # sample id -> why it is bad input

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.csv_path.name

    def item(self, image_id: str, labeled: bool) -> Item:
        if image_id in self.problems:
            raise ValueError(self.problems[image_id])
        row = self.rows[image_id]
        if row.file is None:
            raise ValueError(f"line {row.line}: no image {image_id}.* in {self.images_dir}")
        data = (self.images_dir / row.file).read_bytes()
        if not labeled:
            return Item(data, row.file, None, None, None)
        assert self.classes is not None
        present = set(row.positives or ())
        states = [1 if name in present else -1 for name in self.classes.names]
        return Item(data, row.file, states, [{"name": n} for n in self.classes.names if n in present], None)

    def origin(self, listed: int) -> dict:
        return {"source": str(self.csv_path.resolve()), "images": str(self.images_dir.resolve()),
                "tree": self.csv_path.name, "year": None, "listed": listed}


def _read_table(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise SourceError(f"--labels {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first name
    except UnicodeDecodeError as err:
        raise SourceError(f"--labels {path}: not UTF-8 text ({err}); save it as UTF-8 CSV") from None
    return list(csv.reader(text.splitlines()))


def _form(path: Path, header: list[str]) -> tuple[str, list[str], bool]:
    """('tags' or 'onehot', the class columns, whether the last column is split); SourceError else."""
    cells = [c.strip() for c in header]
    has_split = len(cells) > 2 and cells[-1].lower() == "split"
    body = cells[1:-1] if has_split else cells[1:]
    if cells and cells[0].lower() == "id" and body:
        if len(body) == 1 and body[0].lower() == "labels":
            return "tags", [], has_split
        if all(body) and len(set(body)) == len(body) and "labels" not in (b.lower() for b in body):
            return "onehot", body, has_split
    raise SourceError(f"--labels {path}: header {','.join(header)!r} matches neither accepted form: {FORMS}")


def _class_file(path: Path) -> list[str]:
    if not path.is_file():
        raise SourceError(f"--classes {path}: no such file")
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _labels(form: str, columns: list[str], cells: list[str], known: set[str] | None) -> tuple[str, ...] | None:
    """The positive class names of one row, None when its label cells are all empty; ValueError when bad."""
    if form == "tags":
        names = tuple(cells[0].split())
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r} (not in --classes)")
        return names or None
    values = [c.strip() for c in cells]
    if not any(values):
        return None
    for name, value in zip(columns, values):
        if value not in ("0", "1"):
            raise ValueError(f"column {name!r} holds {value!r}, expected 0 or 1")
    return tuple(name for name, value in zip(columns, values) if value == "1")


def _files(images_dir: Path) -> tuple[set[str], dict[str, list[str]]]:
    if not images_dir.is_dir():
        raise SourceError(f"--images {images_dir}: no such folder")
    names = {p.name for p in images_dir.iterdir() if p.is_file()}
    stems: dict[str, list[str]] = {}
    for name in sorted(names):
        stems.setdefault(Path(name).stem, []).append(name)
    return names, stems


def _match(raw_id: str, names: set[str], stems: dict[str, list[str]]) -> tuple[str, str | None, str | None]:
    """(sample id, file in DIR or None, problem or None) of one row's id."""
    if raw_id in names:
        return Path(raw_id).stem, raw_id, None
    has_suffix = Path(raw_id).suffix.lower() in IMAGE_SUFFIXES
    sample_id = Path(raw_id).stem if has_suffix else raw_id
    found = [] if has_suffix else stems.get(raw_id, [])
    if len(found) > 1:
        return sample_id, None, f"id {raw_id} matches several files ({', '.join(found)}): give its extension"
    return sample_id, (found[0] if found else None), None


def _read_rows(source: CsvItems, table: list[list[str]], form: str, columns: list[str], has_split: bool,
               known: set[str] | None) -> None:
    """Fill source.rows and source.problems from the CSV's data lines."""
    width = len(table[0])
    names, stems = _files(source.images_dir)
    for line, cells in enumerate(table[1:], start=2):
        if not cells or not any(c.strip() for c in cells):
            continue  # a blank line
        raw_id = cells[0].strip()
        if not raw_id:
            raise SourceError(f"--labels {source.csv_path}: line {line} has no id; every row needs one")
        sample_id, file, problem = _match(raw_id, names, stems)
        split = cells[-1].strip().lower() if has_split and len(cells) == width else csv_split(sample_id)
        positives = None
        filled = len(cells) == width and any(c.strip() for c in cells[1:width - has_split])
        if len(cells) != width:
            problem = problem or f"line {line} has {len(cells)} cells, the header {width}"
        elif has_split and split not in SPLITS:
            problem = problem or f"line {line}: split {cells[-1]!r} is not train, val or test"
            split = csv_split(sample_id)
        if "." in sample_id or "/" in sample_id:
            problem = problem or f"id {raw_id}: a sample id may not hold '.' or '/' (webdataset keys): rename the file"
        if problem is None:
            try:
                positives = _labels(form, columns, cells[1:width - has_split], known)
            except ValueError as err:
                problem = f"line {line}: {err}"
        first = source.rows.get(sample_id)
        if first is not None:
            source.problems[sample_id] = f"listed twice in {source.csv_path.name} (lines {first.line} and {line})"
            continue
        source.rows[sample_id] = _Row(line, file, positives, split, filled)
        if problem is not None:
            source.problems[sample_id] = problem


def _class_list(path: Path, classes_file: Path | None, form: str, columns: list[str],
                rows: dict[str, _Row]) -> ClassList:
    if classes_file is not None:
        names = _class_file(classes_file)
        if form == "onehot":
            extra = [c for c in columns if c not in names]
            lacking = [n for n in names if n not in columns]
            if extra or lacking:
                what = f"column(s) {', '.join(extra)} not in --classes" if extra else \
                    f"no column for {', '.join(lacking)} of --classes"
                raise SourceError(f"--labels {path}: {what} {classes_file}; the header's classes and --classes "
                                  "must be the same names")
        where = f"--classes {classes_file}"
    else:
        names = sorted(columns if form == "onehot" else {n for r in rows.values() for n in r.positives or ()})
        where = f"--labels {path}"
    try:
        return ClassList(tuple(names))
    except ClassListError as err:
        raise SourceError(f"{where}: no usable class list ({err})") from None


def csv_plan(csv_path: Path, images_dir: Path, classes_file: Path | None = None) -> Plan:
    """The Plan of a labels CSV and its image folder (module docstring)."""
    table = _read_table(csv_path)
    if not table:
        raise SourceError(f"--labels {csv_path}: empty file; expected a header {FORMS}")
    form, columns, has_split = _form(csv_path, table[0])
    known = set(_class_file(classes_file)) if classes_file is not None else None
    source = CsvItems(csv_path, images_dir)
    _read_rows(source, table, form, columns, has_split, known)
    source.classes = _class_list(csv_path, classes_file, form, columns, source.rows)
    by_split = {split: sorted(i for i, row in source.rows.items() if row.split == split) for split in SPLITS}
    splits = {split: [(source, ids)] for split, ids in by_split.items() if ids}
    if not splits:
        raise SourceError(f"--labels {csv_path}: no rows below the header")
    # Hidden labels: no row of the split has anything in its label cells.
    labeled = {split: any(source.rows[i].filled for i in ids)
               for split, ids in by_split.items() if ids}
    inputs = [str(csv_path.resolve()), str(images_dir.resolve())]
    return Plan(source.classes, splits, labeled, inputs, count_all_negative=True)
