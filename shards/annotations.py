"""VOC XML annotations -> objects and the devkit's three-state image labels.

docs/SPEC.md: an image is positive (1) for a class when it holds at least one instance that is
not `difficult`; 0 when its only instances are difficult; -1 when it has none. These are
the values of the devkit's `<class>_<split>.txt` files, kept per sample so that both the
sklearn mAP (positives = 1) and the VOC07 11-point AP (0 ignored) come from one source.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

from shards.classes import VOC, VOC_CLASSES

_INDEX = VOC.index()

PRESENT, DIFFICULT_ONLY, ABSENT = 1, 0, -1
# What the readers give every class of a sample packed without annotations (a split with hidden
# labels, manifest "labeled": false). 0 is the devkit's "ignore" value: no class reads as
# positive and the VOC07 AP skips the image. It is NOT a label: whether a split is labeled is
# read from the manifest (shards.manifest.is_labeled), never guessed from the states.
UNLABELED_STATE = DIFFICULT_ONLY


class AnnotationError(ValueError):
    """An annotation that cannot be used: unparsable XML, unknown class, missing field."""


@dataclass(frozen=True)
class VocObject:
    name: str
    difficult: bool
    truncated: bool
    bbox: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in VOC's 1-based pixel coordinates

    def to_json(self) -> dict:
        record = asdict(self)
        record["bbox"] = list(self.bbox)
        return record


@dataclass(frozen=True)
class Annotation:
    width: int
    height: int
    objects: list[VocObject]


def devkit_states(objects: list[VocObject]) -> list[int]:
    """The 20 devkit states (1 / 0 / -1, SPEC class order) of an image holding `objects`."""
    states = [ABSENT] * VOC.num_classes
    for obj in objects:
        c = _INDEX[obj.name]
        states[c] = PRESENT if not obj.difficult else max(states[c], DIFFICULT_ONLY)
    return states


def _text(node: ET.Element, path: str, default: str | None = None) -> str:
    found = node.findtext(path)
    if found is None or not found.strip():
        if default is not None:
            return default
        raise AnnotationError(f"missing <{path}>")
    return found.strip()


def _int(node: ET.Element, path: str, default: str | None = None) -> int:
    value = _text(node, path, default)
    try:
        # Some VOC files write coordinates as floats ("273.0"); they are whole pixels.
        return int(float(value))
    except ValueError:
        raise AnnotationError(f"<{path}> is not a number: {value!r}") from None


def parse_annotation(xml_bytes: bytes) -> Annotation:
    """Parse one VOC annotation file; raises AnnotationError saying what is wrong."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as err:
        raise AnnotationError(f"XML does not parse ({err})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"root element is <{root.tag}>, expected <annotation>")
    objects = []
    for node in root.iter("object"):
        name = _text(node, "name")
        if name not in _INDEX:
            raise AnnotationError(f"unknown class {name!r} (known: {', '.join(VOC_CLASSES)})")
        bbox = tuple(_int(node, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(VocObject(
            name=name,
            # The devkit treats a missing flag as 0; so do we.
            difficult=bool(_int(node, "difficult", "0")),
            truncated=bool(_int(node, "truncated", "0")),
            bbox=bbox,  # type: ignore[arg-type]
        ))
    return Annotation(width=_int(root, "size/width"), height=_int(root, "size/height"), objects=objects)
