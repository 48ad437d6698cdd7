"""The class list of a shard set: data in its manifest.json, followed by everything downstream.

A model's logits are the class list's `num_logits` columns. VOC keeps the reference report's
layout (docs/SPEC.md): 21 logits, `__background__` at index 0, never positive and left out of
every metric, so class i is logit i + 1. Every other data set has one logit per class.

manifest.json spells it as {"classes": [names in logit order]} plus, for anything but the
report's layout, "background_logit": false. Manifests without the key are VOC's (every shard set
before other data sets existed), so VOC's shards and manifest stay byte for byte as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# ImageNet statistics: every model here (pretrained or not) sees inputs normalized this way.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ClassListError(ValueError):
    """A class list that cannot be used (empty, a name twice, a blank name)."""


@dataclass(frozen=True)
class ClassList:
    """Class names in score order; `background`: the model has an extra logit 0 before them."""

    names: tuple[str, ...]
    background: bool = False

    def __post_init__(self) -> None:
        if not self.names:
            raise ClassListError("the class list is empty")
        seen: set[str] = set()
        for name in self.names:
            if not isinstance(name, str) or not name.strip() or name != name.strip():
                raise ClassListError(f"class name {name!r}: names must be non-empty text without leading or "
                                     "trailing spaces")
            if name in seen:
                raise ClassListError(f"class {name!r} is listed twice")
            seen.add(name)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def num_logits(self) -> int:
        return len(self.names) + int(self.background)

    @property
    def first_logit(self) -> int:
        """The logit of class 0: scores are logits[:, first_logit:]."""
        return int(self.background)

    def index(self) -> dict[str, int]:
        """name -> its column in states and scores."""
        return {name: i for i, name in enumerate(self.names)}

    def to_manifest(self) -> dict:
        """The manifest.json (and config.yaml) keys that record this list."""
        return {"classes": list(self.names)} if self.background else \
            {"classes": list(self.names), "background_logit": False}

    def difference(self, other: ClassList) -> str | None:
        """None when the two lists score alike, else the first difference in words."""
        if self.background != other.background:
            return (f"logit 0 is __background__ in {'the first' if self.background else 'the second'} "
                    "and a class in the other")
        for i, (mine, theirs) in enumerate(zip(self.names, other.names)):
            if mine != theirs:
                return f"class {i} is '{mine}' in one and '{theirs}' in the other"
        if self.num_classes != other.num_classes:
            longer, n = (self, other.num_classes) if self.num_classes > other.num_classes else (other, self.num_classes)
            return f"{self.num_classes} classes against {other.num_classes} (the longer goes on with '{longer.names[n]}')"
        return None

    def describe(self) -> str:
        shown = ", ".join(self.names[:5]) + (f", ... ({self.num_classes} classes)" if self.num_classes > 5 else "")
        return f"{shown}; {self.num_logits} logits" + (" (logit 0 __background__)" if self.background else "")


VOC = ClassList(VOC_CLASSES, background=True)


def class_list(record: Mapping) -> ClassList:
    """The ClassList a manifest.json or a run's config.yaml records (module docstring); ClassListError else."""
    names = record.get("classes")
    background = record.get("background_logit", True)
    if not isinstance(names, Sequence) or isinstance(names, str) or not isinstance(background, bool):
        raise ClassListError(f"'classes' must be a list of names and 'background_logit' true or false, got "
                             f"{str(names)[:60]} and {background!r}")
    return ClassList(tuple(names), background=background)
