"""The fixed held-out rule for data sets that come without a validation (or test) list.

A sample's bucket is a pure function of its id, so the same image always lands in the same
split, whatever else the data set holds, on any machine and Python (zlib.crc32 is stable; the
built-in hash() is salted per process):

    bucket(id) = zlib.crc32(id.encode("utf-8")) % 10

COCO 2014 (shards.coco): train2014 ids in bucket 0 are `val`, the rest `train` (val2014 is `test`).
A labels CSV without a split column (shards.labels_csv): bucket 0 is `val`, bucket 1 `test`, the
rest `train`. The id is the sample id: the image file name without its extension
(`COCO_train2014_000000000009`).
"""

from __future__ import annotations

import zlib

BUCKETS = 10


def bucket(sample_id: str) -> int:
    """0-9, fixed for `sample_id` (module docstring)."""
    return zlib.crc32(sample_id.encode("utf-8")) % BUCKETS


def coco_train_split(sample_id: str) -> str:
    """'val' for the tenth of train2014 held out, else 'train'."""
    return "val" if bucket(sample_id) == 0 else "train"


def csv_split(sample_id: str) -> str:
    """'val', 'test' or 'train' for a labels CSV row without a split column."""
    return {0: "val", 1: "test"}.get(bucket(sample_id), "train")
