"""The files of COCO 2014 under one namespace, from the unzipped folder or the official zips.

Every --coco PATH is a folder (holding `annotations/`, `train2014/`, ...) or a zip archive whose
members carry the same relative names (train2014.zip holds `train2014/COCO_train2014_*.jpg`,
annotations_trainval2014.zip holds `annotations/instances_train2014.json`). Zips are read member
by member with `zipfile`, never extracted. A name is looked up in the --coco paths in the order
given; the first that has it answers.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from shards.sources import SourceError

_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class CocoFiles:
    """Read-only access to COCO's relative paths across folders and zips."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._folders: list[Path] = []
        self._zips: list[tuple[Path, zipfile.ZipFile, dict[str, zipfile.ZipInfo]]] = []
        try:
            for path in paths:
                self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> None:
        if path.is_dir():
            self._folders.append(path)
            return
        if not path.exists():
            raise SourceError(f"--coco {path}: no such file or folder")
        if not zipfile.is_zipfile(path):
            raise SourceError(f"--coco {path}: a file but not a zip archive; give the folder holding annotations/, "
                              "train2014/ and val2014/, or the official zips (train2014.zip, val2014.zip, "
                              "annotations_trainval2014.zip)")
        try:
            archive = zipfile.ZipFile(path)
            members = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        except _DAMAGED as err:
            raise SourceError(f"--coco {path}: the archive is truncated or damaged ({err}); download or copy "
                              "it again") from None
        self._zips.append((path, archive, members))

    def where(self, relative: str) -> Path | None:
        """The --coco path that holds `relative`, or None."""
        for folder in self._folders:
            if (folder / relative).is_file():
                return folder
        for path, _, members in self._zips:
            if relative in members:
                return path
        return None

    def read(self, relative: str) -> bytes | None:
        """The bytes of `relative`, or None when no --coco path holds it."""
        for folder in self._folders:
            file = folder / relative
            if file.is_file():
                return file.read_bytes()
        for path, archive, members in self._zips:
            info = members.get(relative)
            if info is not None:
                try:
                    return archive.read(info)
                except _DAMAGED as err:
                    raise SourceError(f"--coco {path}: member {relative} is damaged ({err}); download or copy "
                                      "the archive again") from None
        return None

    def has_tree(self, tree: str) -> bool:
        """Whether some --coco path holds the image folder `tree` (e.g. test2014)."""
        prefix = f"{tree}/"
        return any((folder / tree).is_dir() for folder in self._folders) or \
            any(name.startswith(prefix) for _, _, members in self._zips for name in members)

    def close(self) -> None:
        for _, archive, _ in self._zips:
            archive.close()
