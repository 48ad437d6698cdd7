"""What shards.pack needs from a data source, whatever its layout (VOC, COCO, a labels CSV).

A source module turns its input into a `Plan`: the class list, and per split the sources that
fill it with their ids and whether the split is labeled. The packer (shards.pack_core) then asks
each source for one `Item` at a time (the image bytes and its labels), so at most one image is in
memory, and does the rest alike for every data set: decode and re-encode, the sample json,
shards, manifest, bad-input bookkeeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from shards.classes import ClassList


@dataclass(frozen=True)
class Item:
    """One image of a split, as its source has it (not yet decoded)."""

    image: bytes
    image_name: str  # how errors name the image file: JPEGImages/000001.jpg, train2014/COCO_....jpg
    states: list[int] | None  # one per class (1 / 0 / -1); None in an unlabeled split
    objects: list[dict] | None  # the sample json's "objects"; None in an unlabeled split
    size: tuple[int, int] | None  # (width, height) the annotation's boxes are in; None when none says


class ItemSource(ABC):
    """One origin of samples (a VOC<year> tree, a COCO image tree, a labels CSV)."""

    name: str  # shown in the progress bar and the summary line: VOC2007, train2014, labels.csv

    @abstractmethod
    def item(self, image_id: str, labeled: bool) -> Item:
        """The image `image_id` and, when `labeled`, its labels; ValueError naming what is wrong."""

    @abstractmethod
    def origin(self, listed: int) -> dict:
        """The manifest's record of this source in one split that it gave `listed` ids:
        {"source", "tree", "year", "listed", ...}."""


@dataclass
class Plan:
    """Everything a pack writes, decided before the first image is read."""

    classes: ClassList
    splits: dict[str, list[tuple[ItemSource, list[str]]]]  # split -> its sources, each with its ids
    labeled: dict[str, bool]  # split -> packed with labels (False: labels hidden)
    inputs: list[str]  # the manifest's "source": the paths given on the command line
    extra: dict = field(default_factory=dict)  # manifest keys of this kind of data set
    # Whether each labeled split's record counts "all_negative" (images negative for every class:
    # COCO images without annotation, CSV rows without labels). VOC's images always have objects
    # and its manifest stays as it was, so VOC does not.
    count_all_negative: bool = False
    close: Callable[[], None] = lambda: None  # releases open archives
