"""A labels-CSV data set of our own: `python -m shards.synth --format csv --out DIR`.

DIR/images/img_NNNN.jpg and DIR/labels.csv, in either form `shards.pack --labels` reads:
`--csv-form tags` (default; header id,labels, names separated by spaces) or `--csv-form onehot`
(header id,<class>,...; 0/1 cells). The images and labels are the same in both forms.
`--with-split` adds a split column (the first 70% of rows train, the next 15% val, the rest test:
not the held-out-by-id rule, so a test can tell the two apart); without it the packer holds val and
test out by id. `--hide-test-labels` leaves the label cells of the test rows empty (hidden labels).
Some images have no object: their labels are empty (all 0), negatives for every class.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from shards.holdout import csv_split
from shards.synth_drawing import Backgrounds, appearances
from shards.synth_photos import MAX_SIDE, draw_photo

CLASSES = ("heron", "kayak", "lantern", "mitten", "pretzel", "quokka", "tulip", "yurt")  # one word: tags cells
DEFAULT_ROWS = 120
FORMS = ("tags", "onehot")
_STREAM = 7  # keeps these images apart from the COCO-format ones of the same seed


def row_split(index: int, rows: int) -> str:
    """The split column --with-split writes for row `index` of `rows`."""
    return "train" if index < 0.7 * rows else "val" if index < 0.85 * rows else "test"


def generate_csv(out: Path, rows: int = DEFAULT_ROWS, form: str = "tags", with_split: bool = False,
                 hide_test_labels: bool = False, seed: int = 0, backgrounds_dir: Path | None = None,
                 max_side: int = MAX_SIDE, quality: int = 90) -> Path:
    """Write DIR/images/ and DIR/labels.csv (module docstring); returns the csv's path."""
    if form not in FORMS:
        raise ValueError(f"form {form!r}: expected one of {', '.join(FORMS)}")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    looks = appearances(CLASSES)
    backgrounds = Backgrounds.load(backgrounds_dir)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", *(["labels"] if form == "tags" else CLASSES), *(["split"] if with_split else [])])
    for index in range(rows):
        sample_id = f"img_{index:04d}"
        photo = draw_photo(seed, _STREAM, index, looks, backgrounds, max_side, quality)
        (images / f"{sample_id}.jpg").write_bytes(photo.jpeg)
        split = row_split(index, rows) if with_split else csv_split(sample_id)
        hidden = hide_test_labels and split == "test"
        present = {obj.name for obj in photo.objects}
        if form == "tags":
            cells = [" ".join(c for c in CLASSES if c in present)] if not hidden else [""]
        else:
            cells = [("1" if c in present else "0") if not hidden else "" for c in CLASSES]
        writer.writerow([sample_id, *cells, *([split] if with_split else [])])
    path = out / "labels.csv"
    path.write_text(text.getvalue())
    return path
