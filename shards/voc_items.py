"""VOC as a shards.items.Plan: the VOC<year> trees of shards.sources, their XML as labels.

Labels are the 20 devkit states 1/0/-1 (shards.annotations); objects carry name, difficult,
truncated and the XML's 1-based bbox; the XML's <size> is the frame the boxes are in.

A split none of whose ids has an annotation (a test set with hidden labels) is packed
unlabeled, no flag needed; a split with only SOME annotations missing is bad input like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shards.annotations import AnnotationError, devkit_states, parse_annotation
from shards.classes import VOC
from shards.items import Item, ItemSource, Plan
from shards.sources import SourceError, VocSource, collect_splits, open_sources


class VocItems(ItemSource):
    """One VOC<year> tree as a source of items."""

    def __init__(self, tree: VocSource) -> None:
        self.tree = tree
        self.name = tree.name

    def item(self, image_id: str, labeled: bool) -> Item:
        xml = self.tree.annotation(image_id) if labeled else None
        if labeled and xml is None:
            raise ValueError(f"no annotation Annotations/{image_id}.xml")
        data = self.tree.image(image_id)
        if data is None:
            raise ValueError(f"no image JPEGImages/{image_id}.jpg")
        if xml is None:
            return Item(data, f"JPEGImages/{image_id}.jpg", None, None, None)
        try:
            annotation = parse_annotation(xml)
        except AnnotationError as err:
            raise ValueError(f"Annotations/{image_id}.xml: {err}") from None
        return Item(data, f"JPEGImages/{image_id}.jpg", devkit_states(annotation.objects),
                    [obj.to_json() for obj in annotation.objects], (annotation.width, annotation.height))

    def origin(self, listed: int) -> dict:
        return {"source": str(self.tree.path.resolve()), "tree": self.tree.name, "year": self.tree.year,
                "listed": listed}


def split_is_labeled(source: VocSource, ids: Sequence[str]) -> bool:
    """False when no id of the split has an annotation: its labels are hidden, not broken.

    One annotation is enough to call the split labeled, so that a split with some annotations
    lost still fails naming them instead of silently packing without labels.
    """
    return not ids or any(source.has_annotation(image_id) for image_id in ids)


def _labeled(split: str, parts: Sequence[tuple[VocSource, Sequence[str]]]) -> bool:
    """Whether the split's sources are labeled; SourceError when some are and some hide their labels."""
    labeled = {str(source): split_is_labeled(source, ids) for source, ids in parts}
    if len(set(labeled.values())) > 1:
        with_labels = ", ".join(name for name, known in labeled.items() if known)
        hidden = ", ".join(name for name, known in labeled.items() if not known)
        raise SourceError(f"split '{split}': {with_labels} has annotations and {hidden} has none (labels hidden); "
                          "one split cannot be both: pack them into separate shard folders")
    return all(labeled.values())


def voc_plan(voc_paths: Sequence[Path], years: Sequence[str] | None = None) -> Plan:
    """The Plan of every split found in `voc_paths` (the VOC<year> trees `years` chooses)."""
    trees: list[VocSource] = []

    def close() -> None:
        for tree in trees:
            tree.close()

    try:
        for path in voc_paths:
            trees += open_sources(path, years)
        found = collect_splits(trees)
        labeled = {split: _labeled(split, parts) for split, parts in found.items()}
    except BaseException:
        close()
        raise
    items = {id(tree): VocItems(tree) for tree in trees}
    splits = {split: [(items[id(tree)], ids) for tree, ids in parts] for split, parts in found.items()}
    return Plan(VOC, splits, labeled, [str(p.resolve()) for p in voc_paths], close=close)
