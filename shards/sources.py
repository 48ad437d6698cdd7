"""Where VOC comes from: a VOCdevkit folder, one of its VOC<year> folders, or the official tars.

Any year: a VOC<year> tree is found by its ImageSets/Main (VOC2007, VOC2012, ...). A VOCdevkit
(folder or tar) holding several years is refused, naming them, unless `years` chooses (the
packer's --year); the folder and the tar of the same tree are read alike. The official archives
(VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, VOCtrainval_11-May-2012.tar, ...) are read
in place with `tarfile`: members are read by offset, nothing is extracted to disk. Every source
exposes the same three things: the ids a split lists, an annotation, an image (and whether an
annotation exists, which is how the packer recognises a split with hidden labels), plus its
`name` (VOC2012) and `year` ("2012"; None for a tree whose folder does not say).
"""

from __future__ import annotations

import lzma
import re
import tarfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

# What a truncated or damaged archive raises while tarfile reads it (headers or compressed data).
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
SPLITS = ("train", "val", "test")  # trainval is the union of train and val: not packed twice
_IMAGESET = re.compile(r"^(.*?)ImageSets/Main/(train|val|trainval|test)\.txt$")


_YEAR = re.compile(r"^VOC(\d{4})$")


class SourceError(ValueError):
    """A --voc path that is not a VOC source, or sources that contradict each other."""


class VocSource(ABC):
    """One VOC<year> tree; paths inside it are relative to its year folder."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path  # what --voc named
        self.name = name  # the year folder's name, e.g. VOC2012
        match = _YEAR.match(name)
        self.year = match.group(1) if match else None

    def __str__(self) -> str:
        return str(self.path) if self.path.name == self.name else f"{self.path} ({self.name})"

    @abstractmethod
    def read(self, relative: str) -> bytes | None:
        """The bytes of VOC<year>/<relative>, or None if the source has no such file."""

    def exists(self, relative: str) -> bool:
        """Whether VOC<year>/<relative> is in the source (subclasses answer without reading it)."""
        return self.read(relative) is not None

    def close(self) -> None:
        """Release open files (tars)."""

    def split_ids(self, split: str) -> list[str] | None:
        """Ids listed in ImageSets/Main/<split>.txt, or None if the source lacks that split."""
        data = self.read(f"ImageSets/Main/{split}.txt")
        if data is None:
            return None
        # Lines are "<id>" (devkit lines may carry a second column; the id is the first token).
        return [line.split()[0] for line in data.decode("utf-8").splitlines() if line.strip()]

    def annotation(self, image_id: str) -> bytes | None:
        return self.read(f"Annotations/{image_id}.xml")

    def has_annotation(self, image_id: str) -> bool:
        return self.exists(f"Annotations/{image_id}.xml")

    def image(self, image_id: str) -> bytes | None:
        return self.read(f"JPEGImages/{image_id}.jpg")


class FolderSource(VocSource):
    def __init__(self, path: Path, voc_root: Path) -> None:
        super().__init__(path, voc_root.name)
        self.voc_root = voc_root

    def read(self, relative: str) -> bytes | None:
        file = self.voc_root / relative
        return file.read_bytes() if file.is_file() else None

    def exists(self, relative: str) -> bool:
        return (self.voc_root / relative).is_file()


class _Archive:
    """One open tar and its member headers, shared by the year trees inside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, mode="r:*")
        except _DAMAGED as err:
            raise _damaged(path, err) from None
        try:
            self.members = self.tar.getmembers()  # one pass over the headers; data stays in the archive
        except _DAMAGED as err:
            self.tar.close()
            raise _damaged(path, err) from None

    def prefixes(self) -> list[str]:
        """The folders (inside the archive, with their trailing /) that hold ImageSets/Main/<split>.txt."""
        return sorted({m.group(1) for m in map(_IMAGESET.match, (i.name for i in self.members)) if m})


class TarSource(VocSource):
    def __init__(self, archive: _Archive, prefix: str) -> None:
        super().__init__(archive.path, prefix.rstrip("/").rsplit("/", 1)[-1] or archive.path.name)
        self.archive = archive
        self.members = {i.name[len(prefix):]: i for i in archive.members if i.isfile() and i.name.startswith(prefix)}

    def read(self, relative: str) -> bytes | None:
        info = self.members.get(relative)
        if info is None:
            return None
        try:
            stream = self.archive.tar.extractfile(info)
            return stream.read() if stream is not None else None
        except _DAMAGED as err:
            raise _damaged(self.path, err) from None

    def exists(self, relative: str) -> bool:
        return relative in self.members

    def close(self) -> None:
        self.archive.tar.close()  # idempotent: every year tree of the archive closes it


def _damaged(path: Path, err: Exception) -> SourceError:
    return SourceError(f"--voc {path}: the archive is truncated or damaged ({err or type(err).__name__}); "
                       "download or copy it again")


def _year_folders(path: Path) -> list[Path]:
    """The VOC trees under a folder: itself (a year folder), its VOC<year> children (a VOCdevkit),
    or those of its VOCdevkit child (the folder a tar was extracted into)."""
    if (path / "ImageSets" / "Main").is_dir():
        return [path]
    for devkit in (path, path / "VOCdevkit"):
        found = sorted(child for child in devkit.glob("VOC*") if (child / "ImageSets" / "Main").is_dir())
        if found:
            return found
    return []


def _choose(path: Path, trees: list[VocSource], years: Sequence[str] | None) -> list[VocSource]:
    """The trees of one --voc PATH that --year chooses (all of one tree without --year); SourceError else."""
    names = ", ".join(tree.name for tree in trees)
    if years is None:
        if len(trees) == 1:
            return trees
        choices = " or ".join(f"--year {tree.year or tree.name}" for tree in trees)
        raise SourceError(f"--voc {path} holds several VOC trees ({names}): choose one with {choices}, several "
                          f"with one --year each (their ids must not collide), or give --voc {path}/VOC<year>")
    chosen = [tree for tree in trees if tree.year in years]
    if not chosen:
        raise SourceError(f"--voc {path} holds {names}, none of --year {', '.join(years)}; pick a year it holds")
    return chosen


def open_sources(path: Path, years: Sequence[str] | None = None) -> list[VocSource]:
    """The VOC trees of one --voc PATH (a VOCdevkit or VOC<year> folder, or a possibly compressed tar)
    that `years` chooses; without `years` a PATH must hold exactly one tree."""
    if not path.exists():
        raise SourceError(f"--voc {path}: no such file or folder")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise SourceError(f"--voc {path}: a file but not a tar archive; give a VOCdevkit folder, one of its "
                              "VOC<year> folders, or an official tar such as VOCtrainval_06-Nov-2007.tar")
        archive = _Archive(path)
        prefixes = archive.prefixes()
        if not prefixes:
            archive.tar.close()
            raise SourceError(f"--voc {path}: expected a VOC tree with ImageSets/Main/<split>.txt inside the "
                              "archive (like VOCdevkit/VOC2007/ in the official tars), found none")
        trees: list[VocSource] = [TarSource(archive, prefix) for prefix in prefixes]
    else:
        trees = [FolderSource(path, root) for root in _year_folders(path)]
        if not trees:
            raise SourceError(f"--voc {path}: not a VOC folder: expected {path}/VOC<year>/ImageSets/Main (a "
                              f"VOCdevkit folder, e.g. VOC2007 or VOC2012) or {path}/ImageSets/Main (a year folder)")
    try:
        return _choose(path, trees, years)
    except SourceError:
        trees[0].close()
        raise


def open_source(path: Path) -> VocSource:
    """The one VOC tree of `path` (open_sources without a year choice)."""
    return open_sources(path)[0]


def collect_splits(sources: list[VocSource]) -> dict[str, list[tuple[VocSource, list[str]]]]:
    """For every split found: each source that lists it, with its ids (in file order).

    Several sources may fill one split ("07+12": VOC2007's train and VOC2012's train make one
    train split) as long as no id is listed by two of them, in any splits: the same id twice
    would be one sample key twice, or the same image in train and test. SourceError names them.
    """
    found: dict[str, list[tuple[VocSource, list[str]]]] = {}
    owner: dict[str, tuple[VocSource, str]] = {}  # id -> the source and split that first listed it
    clashes: list[str] = []
    for source in sources:
        for split in SPLITS:
            ids = source.split_ids(split)
            if ids is None:
                continue
            for image_id in dict.fromkeys(ids):
                first = owner.setdefault(image_id, (source, split))
                if first[0] is not source:
                    clashes.append(f"{image_id} ({first[1]} of {first[0]}, {split} of {source})")
            found.setdefault(split, []).append((source, ids))
    if clashes:
        shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise SourceError(f"{len(clashes)} image id(s) are listed by two --voc sources: {shown}; each image must "
                          "come from one source (the same tree given twice, or two releases that share images "
                          "such as VOC2011 and VOC2012?): drop one")
    if not found:
        names = ", ".join(str(s) for s in sources)
        raise SourceError(f"no ImageSets/Main/{{train,val,test}}.txt in {names}")
    return {split: found[split] for split in SPLITS if split in found}
