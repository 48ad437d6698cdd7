"""Where VOC comes from: a VOCdevkit folder, its VOC2007 folder, or the official tars.

The official archives (VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar) are read in
place with `tarfile`: members are read by offset, nothing is extracted to disk. Every
source exposes the same three things: the ids a split lists, an annotation, an image (and
whether an annotation exists, which is how the packer recognises a split with hidden labels).
"""

from __future__ import annotations

import lzma
import re
import tarfile
import zlib
from abc import ABC, abstractmethod
from pathlib import Path

# What a truncated or damaged archive raises while tarfile reads it (headers or compressed data).
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
SPLITS = ("train", "val", "test")  # trainval is the union of train and val: not packed twice
_IMAGESET = re.compile(r"^(.*?)ImageSets/Main/(train|val|trainval|test)\.txt$")


class SourceError(ValueError):
    """A --voc path that is not a VOC source, or sources that contradict each other."""


class VocSource(ABC):
    """One VOC2007 tree; paths inside it are relative to the VOC2007 folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def read(self, relative: str) -> bytes | None:
        """The bytes of VOC2007/<relative>, or None if the source has no such file."""

    def exists(self, relative: str) -> bool:
        """Whether VOC2007/<relative> is in the source (subclasses answer without reading it)."""
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
        super().__init__(path)
        self.voc_root = voc_root

    def read(self, relative: str) -> bytes | None:
        file = self.voc_root / relative
        return file.read_bytes() if file.is_file() else None

    def exists(self, relative: str) -> bool:
        return (self.voc_root / relative).is_file()


class TarSource(VocSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.tar = tarfile.open(path, mode="r:*")
        except _DAMAGED as err:
            raise _damaged(path, err) from None
        try:
            members = self.tar.getmembers()  # one pass over the headers; data stays in the archive
        except _DAMAGED as err:
            self.tar.close()
            raise _damaged(path, err) from None
        prefixes = {m.group(1) for m in map(_IMAGESET.match, (i.name for i in members)) if m}
        if len(prefixes) != 1:
            self.tar.close()
            found = "none" if not prefixes else ", ".join(sorted(prefixes))
            raise SourceError(f"--voc {path}: expected one VOC2007 tree with ImageSets/Main/<split>.txt "
                              f"inside the archive (like VOCdevkit/VOC2007/ in the official tars), found {found}")
        prefix = prefixes.pop()
        self.members = {i.name[len(prefix):]: i for i in members if i.isfile() and i.name.startswith(prefix)}

    def read(self, relative: str) -> bytes | None:
        info = self.members.get(relative)
        if info is None:
            return None
        try:
            stream = self.tar.extractfile(info)
            return stream.read() if stream is not None else None
        except _DAMAGED as err:
            raise _damaged(self.path, err) from None

    def exists(self, relative: str) -> bool:
        return relative in self.members

    def close(self) -> None:
        self.tar.close()


def _damaged(path: Path, err: Exception) -> SourceError:
    return SourceError(f"--voc {path}: the archive is truncated or damaged ({err or type(err).__name__}); "
                       "download or copy it again")


def open_source(path: Path) -> VocSource:
    """A VocSource for a VOCdevkit folder, a VOC2007 folder or a (possibly compressed) tar."""
    if not path.exists():
        raise SourceError(f"--voc {path}: no such file or folder")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise SourceError(f"--voc {path}: a file but not a tar archive; give a VOCdevkit folder, its "
                              "VOC2007 folder, or VOCtrainval_06-Nov-2007.tar / VOCtest_06-Nov-2007.tar")
        return TarSource(path)
    for voc_root in (path / "VOC2007", path, path / "VOCdevkit" / "VOC2007"):
        if (voc_root / "ImageSets" / "Main").is_dir():
            return FolderSource(path, voc_root)
    raise SourceError(f"--voc {path}: not a VOC folder: expected {path}/VOC2007/ImageSets/Main "
                      f"(a VOCdevkit folder) or {path}/ImageSets/Main (a VOC2007 folder)")


def collect_splits(sources: list[VocSource]) -> dict[str, tuple[VocSource, list[str]]]:
    """For every split found: the source that lists it and its ids (in file order)."""
    found: dict[str, tuple[VocSource, list[str]]] = {}
    for source in sources:
        for split in SPLITS:
            ids = source.split_ids(split)
            if ids is None:
                continue
            if split in found:
                raise SourceError(f"split '{split}' is listed by both {found[split][0].path} and {source.path}; "
                                  "give each split once")
            found[split] = (source, ids)
    if not found:
        names = ", ".join(str(s.path) for s in sources)
        raise SourceError(f"no ImageSets/Main/{{train,val,test}}.txt in {names}")
    return found
