"""A failed write as one plain OSError: the real errno and the path the user knows.

torch.save and safetensors report a full disk through their C++/Rust streams
(`basic_ios::clear: iostream error`, `unexpected pos ...`, `PytorchStreamWriter failed writing
file`): text without an errno, in which "No space left on device" appears nowhere.
`as_os_error` gives such an error the errno it most likely had, from the
state of the target file system at the moment of the failure (call it before removing the
partial files: they still hold the space that ran out):
    an OS errno quoted in the text (Rust's "os error 28") -> that errno
    read-only mount (ST_RDONLY)               -> EROFS
    (almost) no free blocks or inodes left    -> ENOSPC
    anything else                             -> EIO, with the library's own message in the text
An OSError that has an errno keeps it; only its path becomes the one given (the checkpoint or
result file, not an internal temp name that no longer exists).
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from pathlib import Path

from safetensors import SafetensorError

# Errors of the libraries that write checkpoints and results that may hide an OSError (matplotlib
# and PIL raise OSError themselves).
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, SafetensorError)

# Below this many free bytes a failed write is taken for a full disk: a write fails with ENOSPC
# only when no block is left, and the partial file still holds what was written.
FULL_BELOW_BYTES = 1 << 20

_QUOTED_ERRNO = re.compile(r"os error (\d+)|Os \{ code: (\d+)")


def existing_ancestor(path: Path) -> Path:
    """`path` or its nearest parent that exists (the file system a new file would go to)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def diagnose(err: BaseException, path: str | os.PathLike) -> int:
    """The errno behind a failed write of `path` (see the module docstring)."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    quoted = _QUOTED_ERRNO.search(str(err))
    if quoted and int(quoted.group(1) or quoted.group(2)) in errno.errorcode:
        return int(quoted.group(1) or quoted.group(2))
    try:
        fs = os.statvfs(existing_ancestor(Path(path)))
    except OSError:
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if fs is not None and (fs.f_bavail * fs.f_frsize < FULL_BELOW_BYTES or (fs.f_files and fs.f_favail == 0)):
        return errno.ENOSPC
    return errno.EIO


def _release_frames(err: BaseException | None) -> None:
    seen = set()
    while err is not None and id(err) not in seen:  # the error and those it was raised from/during
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        err = err.__cause__ or err.__context__


def as_os_error(err: BaseException, path: str | os.PathLike) -> OSError:
    """OSError(errno, strerror, str(path)) for a write of `path` that failed with `err`.
    EIO keeps the library's message in the text, since the errno alone says little there.

    Also clears the local variables of `err`'s traceback frames (the lines stay printable): the
    writer objects there (torch's stream writer) keep the half-written file open, and a deleted
    file that is still open keeps its space, so the disk stayed full while the error was alive."""
    _release_frames(err)
    code = diagnose(err, path)
    text = os.strerror(code)
    if code == errno.EIO and not (isinstance(err, OSError) and err.errno):
        text = f"{text} ({type(err).__name__}: {err})"
    return OSError(code, text, str(path))
