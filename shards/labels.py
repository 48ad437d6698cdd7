"""The devkit labels of one split, without its images: what scoring a submission needs.

`voc_split_labels` reads a VOC source (what `shards.pack --voc` takes: a VOCdevkit folder,
its VOC2007 folder or an official tar) through shards.sources and shards.annotations, so
the states are the ones packing would store. `shard_split_labels` reads the json record of
each sample in packed shards (any data set: one state per class of its manifest). Both return
(ids sorted, states int8 [N, C] 1/0/-1),
rows in id order, the order the trainer's test arrays have (trainer.evaluation.evaluate sorts by id).
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shards.annotations import AnnotationError, devkit_states, parse_annotation
from shards.classes import VOC, class_list
from shards.manifest import MANIFEST_NAME, is_labeled, load_manifest, split_entry
from shards.sources import SPLITS, SourceError, open_sources

_SHOWN = 5  # ids named in a message; the count says how many more there are


class LabelError(ValueError):
    """A split whose labels cannot be read; the message names the path, the ids and what to do."""


def first_ids(ids: Sequence[str]) -> str:
    """The first few of `ids` for a message (the message gives the count)."""
    return ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")


def voc_split_labels(path: str | Path, split: str = "test", year: str | None = None) -> tuple[list[str], np.ndarray]:
    """(sorted ids, int8 states [N, 20]) of `split` from a VOC folder or tar, read from its XML; `year`
    chooses the tree of a VOCdevkit that holds several (VOC2007 and VOC2012)."""
    path = Path(path)
    source = open_sources(path, [year] if year else None)[0]  # SourceError names --voc PATH and what it should be
    try:
        ids = source.split_ids(split)
        if ids is None:
            present = [s for s in (*SPLITS, "trainval") if source.split_ids(s) is not None]
            raise SourceError(f"--voc {path} has no split '{split}' (no ImageSets/Main/{split}.txt; it has "
                              f"{', '.join(present) or 'none'}); pick one with --split or give the source "
                              f"that holds it (test: VOCtest_06-Nov-2007.tar)")
        ids = sorted(set(ids))
        states, bad = [], []
        for image_id in ids:
            xml = source.annotation(image_id)
            if xml is None:
                bad.append(f"Annotations/{image_id}.xml (missing)")
                continue
            try:
                states.append(devkit_states(parse_annotation(xml).objects))
            except AnnotationError as err:
                bad.append(f"Annotations/{image_id}.xml ({err})")
    finally:
        source.close()
    if ids and len(bad) == len(ids) and all(b.endswith("(missing)") for b in bad):
        raise LabelError(f"--voc {path}: split '{split}' has no annotations (labels hidden): there is nothing to "
                         f"score against; its labels are with whoever handed it out (a course or challenge server)")
    if bad:
        raise LabelError(f"--voc {path}: {len(bad)} annotation(s) of split '{split}' cannot be read: "
                         f"{first_ids(bad)}; fix or restore them")
    return ids, np.asarray(states, dtype=np.int8).reshape(len(ids), VOC.num_classes)


def _shard_records(shard: Path) -> list[dict]:
    """The json record of every sample in one shard. Plain tarfile rather than webdataset,
    which imports torch (seconds per CLI call) to read what are a few small members here."""
    try:
        with tarfile.open(shard) as tar:
            return [json.loads(tar.extractfile(m).read()) for m in tar if m.isfile() and m.name.endswith(".json")]
    except (OSError, tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelError(f"{shard}: cannot read its samples ({err}); repack with python -m shards.pack") from None


def shard_split_labels(shards_dir: str | Path, split: str = "test") -> tuple[list[str], np.ndarray]:
    """(sorted ids, int8 states [N, C]) of `split` from the json records of packed shards.

    The ids must be exactly the manifest's (each once): a shard set that disagrees with its
    manifest.json would score a submission against the wrong images."""
    shards_dir = Path(shards_dir)
    manifest = load_manifest(shards_dir)
    entry = split_entry(manifest, split, shards_dir)  # ManifestError lists the splits
    num_classes = class_list(manifest).num_classes
    if not is_labeled(entry):
        raise LabelError(f"{shards_dir}: split '{split}' was packed without annotations (labels hidden): there is "
                         f"nothing to score against; its labels are with whoever handed it out (a course or "
                         f"challenge server)")
    labels: dict[str, list[int]] = {}
    seen: list[str] = []
    for name in entry["shards"]:
        for record in _shard_records(shards_dir / name):
            image_id, states = record.get("id"), record.get("labels")
            if not isinstance(image_id, str) or not isinstance(states, list) or len(states) != num_classes:
                raise LabelError(f"{shards_dir / name}: a sample record lacks 'id' or its {num_classes} 'labels' "
                                 f"({str(record)[:80]}); repack with python -m shards.pack")
            labels[image_id] = states
            seen.append(image_id)
    duplicated = sorted(i for i, n in Counter(seen).items() if n > 1)
    missing = sorted(set(entry["ids"]) - labels.keys())
    extra = sorted(labels.keys() - set(entry["ids"]))
    for what, bad in (("are in several samples", duplicated), ("are in the manifest but in no shard", missing),
                      ("are in the shards but not in the manifest", extra)):
        if bad:
            raise LabelError(f"{shards_dir}: {len(bad)} '{split}' id(s) {what} (first: {first_ids(bad)}): the shards "
                             f"disagree with {MANIFEST_NAME}; repack with python -m shards.pack")
    ids = sorted(labels)
    return ids, np.asarray([labels[i] for i in ids], dtype=np.int8).reshape(len(ids), num_classes)
