"""COCO 2014 as a shards.items.Plan: `python -m shards.pack --coco ROOT --out DIR`.

ROOT is the official layout once unzipped (annotations/instances_{train,val}2014.json, train2014/,
val2014/), or the official zips, one --coco each (shards.coco_files). Splits follow the papers:
train2014 is `train` minus a held-out `val` (shards.holdout: crc32(id) % 10 == 0), val2014 is
`test`. With annotations/image_info_test2014.json and test2014/, test2014 is packed as split
`challenge`, unlabeled (its labels are hidden on the evaluation server).

Sample id = the image file name without its extension (COCO_train2014_000000000009). Classes are
`categories` by ascending id, names as written ("traffic light"), one logit each. Image-level
labels: 1 when the image has any annotation of the class (iscrowd ones too, as the papers count
them), -1 otherwise; an image without any annotation is a negative for every class (counted in
the manifest's "all_negative"). Objects: {"name", "bbox": [x, y, w, h] as COCO gives, "iscrowd"}.

The json files are read whole (json.load), then only the label table is kept: image sizes and per
image (class, box, iscrowd); images are read one at a time while the shards are written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from shards.classes import ClassList, ClassListError
from shards.coco_files import CocoFiles
from shards.holdout import coco_train_split
from shards.items import Item, ItemSource, Plan
from shards.sources import SourceError

YEAR = "2014"
LABELED_TREES = (("train2014", "annotations/instances_train2014.json"),
                 ("val2014", "annotations/instances_val2014.json"))
CHALLENGE = ("test2014", "annotations/image_info_test2014.json")
_SHOWN = 5


@dataclass
class CocoTree(ItemSource):
    """One image folder of COCO (train2014, val2014, test2014) and the label table of its json."""

    name: str
    json_name: str  # annotations/instances_train2014.json
    files: CocoFiles
    classes: tuple[str, ...] = ()
    images: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> (file name, width, height)
    objects: dict[str, list[tuple]] = field(default_factory=dict)  # id -> [(class index, bbox, iscrowd)]
    problems: dict[str, str] = field(default_factory=dict)  # id -> why it is bad input

    def item(self, image_id: str, labeled: bool) -> Item:
        if image_id in self.problems:
            raise ValueError(self.problems[image_id])
        file_name, width, height = self.images[image_id]
        image_name = f"{self.name}/{file_name}"
        data = self.files.read(image_name)
        if data is None:
            raise ValueError(f"no image {image_name} (listed in {self.json_name})")
        if not labeled:
            return Item(data, image_name, None, None, (width, height))
        states = [-1] * len(self.classes)
        found = []
        for c, bbox, iscrowd in self.objects.get(image_id, ()):
            states[c] = 1
            found.append({"name": self.classes[c], "bbox": bbox, "iscrowd": iscrowd})
        return Item(data, image_name, states, found, (width, height))

    def origin(self, listed: int) -> dict:
        where = self.files.where(self.json_name)
        return {"source": str(where.resolve()) if where else None, "tree": self.name, "year": YEAR,
                "listed": listed, "annotations": self.json_name}


def _load(files: CocoFiles, relative: str) -> dict:
    data = files.read(relative)
    if data is None:
        raise SourceError(f"--coco {', '.join(map(str, files.paths))}: no {relative}; give the folder holding "
                          "annotations/, train2014/ and val2014/, or add --coco annotations_trainval2014.zip")
    try:
        loaded = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{relative} (in {files.where(relative)}) is not valid JSON ({err})") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("images"), list):
        raise SourceError(f"{relative} (in {files.where(relative)}) has no 'images' list: not a COCO file")
    return loaded


def _categories(data: dict, relative: str) -> list[tuple[int, str]]:
    """(id, name) of every category, by ascending id."""
    found = data.get("categories")
    if not isinstance(found, list) or not found:
        raise SourceError(f"{relative}: no 'categories' list; the class list comes from it")
    pairs = []
    for entry in found:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or \
                not isinstance(entry.get("name"), str):
            raise SourceError(f"{relative}: category {str(entry)[:80]} lacks an integer 'id' or a 'name'")
        pairs.append((entry["id"], entry["name"]))
    ids = [i for i, _ in pairs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise SourceError(f"{relative}: category id(s) {', '.join(map(str, twice))} defined twice")
    return sorted(pairs)


def _read_images(tree: CocoTree, data: dict) -> dict[int, str]:
    """Fill tree.images (and problems for ids listed twice); returns COCO image id -> sample id."""
    by_coco_id: dict[int, str] = {}
    for n, entry in enumerate(data["images"]):
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(file_name, str) or not isinstance(entry.get("id"), int):
            raise SourceError(f"{tree.json_name}: images[{n}] lacks a 'file_name' or an integer 'id'")
        sample_id = PurePosixPath(file_name).stem
        width, height = entry.get("width"), entry.get("height")
        if sample_id in tree.images:
            tree.problems[sample_id] = f"{file_name} is listed twice in {tree.json_name} 'images'"
        elif "." in sample_id:  # webdataset splits a key at its first dot
            tree.problems[sample_id] = f"{file_name}: a sample id (the name without extension) may not hold '.'"
        elif not (isinstance(width, int) and isinstance(height, int)):
            tree.problems[sample_id] = f"{tree.json_name}: image {entry['id']} has no integer width/height"
        tree.images.setdefault(sample_id, (file_name, width or 0, height or 0))
        other = by_coco_id.setdefault(entry["id"], sample_id)
        if other != sample_id:
            reason = f"{tree.json_name} gives image id {entry['id']} to both {other} and {sample_id}"
            tree.problems[other] = tree.problems[sample_id] = reason
    return by_coco_id


def _read_annotations(tree: CocoTree, data: dict, by_coco_id: dict[int, str], category_index: dict[int, int]) -> None:
    """Fill tree.objects from data['annotations'] (problems for undefined categories and bad boxes)."""
    strays = []
    for n, ann in enumerate(data.get("annotations") or []):
        sample_id = by_coco_id.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if sample_id is None:
            strays.append(str(ann.get("id", f"#{n}")) if isinstance(ann, dict) else f"#{n}")
            continue
        c = category_index.get(ann.get("category_id"))
        bbox = ann.get("bbox")
        if c is None:
            tree.problems.setdefault(sample_id, f"annotation {ann.get('id')} has category_id "
                                                f"{ann.get('category_id')!r}, which 'categories' of {tree.json_name} "
                                                "does not define")
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            tree.problems.setdefault(sample_id, f"annotation {ann.get('id')} in {tree.json_name}: bbox {bbox!r} "
                                                "is not [x, y, width, height]")
        else:
            tree.objects.setdefault(sample_id, []).append((c, bbox, int(bool(ann.get("iscrowd", 0)))))
    if strays:
        raise SourceError(f"{tree.json_name}: {len(strays)} annotation(s) name an image_id that 'images' does not "
                          f"list (annotation ids {', '.join(strays[:_SHOWN])}); the file is damaged or from "
                          "another release")


def _open_tree(files: CocoFiles, name: str, json_name: str) -> tuple[CocoTree, dict]:
    if not files.has_tree(name):
        raise SourceError(f"--coco {', '.join(map(str, files.paths))}: no {name}/ images; give the folder holding "
                          f"{name}/ or add --coco {name}.zip")
    tree = CocoTree(name, json_name, files)
    return tree, _load(files, json_name)


def _labeled_trees(files: CocoFiles) -> tuple[ClassList, list[int], list[CocoTree]]:
    trees, categories = [], None
    for name, json_name in LABELED_TREES:
        tree, data = _open_tree(files, name, json_name)
        mine = _categories(data, json_name)
        if categories is not None and mine != categories:
            diff = sorted(set(mine) ^ set(categories))[:_SHOWN]
            raise SourceError(f"{LABELED_TREES[0][1]} and {json_name} define different categories (first "
                              f"differences, (id, name): {diff}); both must come from the same COCO release")
        categories = mine
        try:
            classes = ClassList(tuple(n for _, n in mine))
        except ClassListError as err:
            raise SourceError(f"{json_name}: its categories cannot be a class list ({err})") from None
        tree.classes = classes.names
        _read_annotations(tree, data, _read_images(tree, data), {i: c for c, (i, _) in enumerate(mine)})
        trees.append(tree)
        del data  # the label table is kept; segmentations and the rest go
    return classes, [i for i, _ in categories], trees


def coco_plan(paths: list[Path]) -> Plan:
    """The Plan of COCO 2014 from --coco paths (module docstring)."""
    files = CocoFiles(paths)
    try:
        classes, category_ids, (train, val) = _labeled_trees(files)
        held = {split: [i for i in sorted(train.images) if coco_train_split(i) == split] for split in ("train", "val")}
        splits = {"train": [(train, held["train"])], "val": [(train, held["val"])], "test": [(val, sorted(val.images))]}
        labeled = {"train": True, "val": True, "test": True}
        challenge_json = files.read(CHALLENGE[1]) is not None
        if challenge_json or files.has_tree(CHALLENGE[0]):
            if not challenge_json:
                raise SourceError(f"--coco: test2014/ images but no {CHALLENGE[1]} (the list of test images): add "
                                  "--coco image_info_test2014.zip, or leave test2014 out")
            test, data = _open_tree(files, *CHALLENGE)
            _read_images(test, data)
            splits["challenge"] = [(test, sorted(test.images))]
            labeled["challenge"] = False
        _refuse_shared_ids(splits)
    except BaseException:
        files.close()
        raise
    return Plan(classes, splits, labeled, [str(p.resolve()) for p in paths], extra={"category_ids": category_ids},
                count_all_negative=True, close=files.close)


def _refuse_shared_ids(splits: dict[str, list[tuple[CocoTree, list[str]]]]) -> None:
    seen: dict[str, str] = {}
    shared = []
    for split, parts in splits.items():
        for tree, ids in parts:
            for i in ids:
                if seen.setdefault(i, tree.name) != tree.name:
                    shared.append(f"{i} ({seen[i]} and {tree.name})")
    if shared:
        raise SourceError(f"{len(shared)} image file name(s) are in two COCO image folders: "
                          f"{', '.join(shared[:_SHOWN])}; each sample id must be one image")
