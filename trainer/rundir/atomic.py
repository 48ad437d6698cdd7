"""Write a result file so that readers see the old file or the new one, never half of one.

A write that fails (a full disk, a read-only mount) removes its temp file at once, so a failure
never leaves the disk fuller than before, and raises a plain OSError with the errno and the
result's path (trainer.faults.disk_errors), whatever library did the writing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from trainer.faults.disk_errors import WRITE_ERRORS, as_os_error

# mkstemp creates 0600 files; results are meant to be read by the whole group/cluster.
RESULT_FILE_MODE = 0o644


def _temp_beside(path: Path) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise as_os_error(err, path) from err
    os.close(fd)
    return tmp


def _written(path: Path, tmp: str, write: Callable[[str], None]) -> None:
    """write(tmp) made readable, or tmp removed and the failure raised as OSError naming `path`."""
    try:
        write(tmp)
        os.chmod(tmp, RESULT_FILE_MODE)
    except BaseException as err:
        # Diagnose before the unlink: the partial file still holds the space that ran out.
        failure = as_os_error(err, path) if isinstance(err, WRITE_ERRORS) else None
        Path(tmp).unlink(missing_ok=True)
        if failure is None:
            raise
        raise failure from err


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(temp_path) on a temp file next to `path`, then rename it onto `path`."""
    path = Path(path)
    tmp = _temp_beside(path)
    _written(path, tmp, write)
    try:
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise as_os_error(err, path) from err
    return path


def _text_writer(text: str) -> Callable[[str], None]:
    def write(tmp: str) -> None:  # fsynced before the rename: the new name never points at unwritten blocks
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return write


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """atomic_write for text, fsynced before the rename (UTF-8, newlines as given)."""
    return atomic_write(path, _text_writer(text))


def atomic_write_texts(files: Mapping[str | os.PathLike, str]) -> None:
    """Several text files, all or none: every one is written to its temp file before any is renamed,
    so a full disk leaves all of them as they were (renames need no new space). Files that
    belong together (a run's config.yaml and its history.csv) never disagree after a failure."""
    done: list[tuple[Path, str]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            tmp = _temp_beside(path)
            done.append((path, tmp))
            _written(path, tmp, _text_writer(text))
    except BaseException:
        for _, tmp in done:
            Path(tmp).unlink(missing_ok=True)
        raise
    for path, tmp in done:
        try:
            os.replace(tmp, path)
        except OSError as err:
            for _, left in done:
                Path(left).unlink(missing_ok=True)
            raise as_os_error(err, path) from err
