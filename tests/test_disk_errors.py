"""A failed write becomes one OSError with the errno behind it and the path the user knows
(trainer.faults.disk_errors), and files that belong together are written all or none
(trainer.rundir.atomic) -- without root: the state of the file system is diagnose()'s input
(os.statvfs, replaced here by what a full, a read-only or a roomy disk returns), and the failed
writes are real ones (a file-size limit makes the kernel refuse the write, EFBIG, as a full disk
refuses it with ENOSPC). tests/test_checkpoint_safety.py and tests/test_run_ends_clean.py fill a
real tmpfs where root may mount one; the last test here diagnoses a real full and read-only tmpfs.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
from safetensors import SafetensorError

from trainer.faults import disk_errors
from trainer.faults.disk_errors import FULL_BELOW_BYTES, as_os_error, diagnose
from trainer.rundir.atomic import RESULT_FILE_MODE, atomic_write, atomic_write_text, atomic_write_texts

# What torch.save and safetensors raise when a write fails: text without an errno.
TORCH_FAILED = RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                            "data/3: file write failed")
STREAM_FAILED = RuntimeError("basic_ios::clear: iostream error")


def _statvfs(*, free: int, read_only: bool = False, inodes: int = 1000, free_inodes: int = 500) -> os.statvfs_result:
    """What os.statvfs returns for a file system with `free` bytes available to users."""
    frsize = 4096
    flag = os.ST_NOSUID | (os.ST_RDONLY if read_only else 0)
    #                        bsize   frsize  blocks     bfree          bavail         files   ffree        favail
    return os.statvfs_result((frsize, frsize, 1 << 20, free // frsize, free // frsize, inodes, free_inodes,
                              free_inodes, flag, 255))


@pytest.fixture
def file_system(monkeypatch):
    """Set `file_system.state` to the statvfs result diagnose() is to see; `file_system.asked` lists
    the paths it asked about."""
    class FileSystem:
        state: os.statvfs_result | Exception = _statvfs(free=50 << 30)
        asked: list[Path] = []

    def statvfs(path):
        FileSystem.asked.append(Path(path))
        if isinstance(FileSystem.state, Exception):
            raise FileSystem.state
        return FileSystem.state

    FileSystem.asked = []
    monkeypatch.setattr(disk_errors.os, "statvfs", statvfs)
    return FileSystem


def test_a_library_error_on_a_full_disk_is_enospc(file_system, tmp_path):
    file_system.state = _statvfs(free=FULL_BELOW_BYTES - 4096)
    target = tmp_path / "checkpoints" / "epoch_0002" / "model.safetensors"  # its folders are not made yet
    assert diagnose(TORCH_FAILED, target) == errno.ENOSPC
    assert file_system.asked == [tmp_path]  # the file system the file would have gone to: its nearest existing folder
    # No block left, or no inode left (the bytes are there, but no new file can be made)
    file_system.state = _statvfs(free=0)
    assert diagnose(STREAM_FAILED, target) == errno.ENOSPC
    file_system.state = _statvfs(free=50 << 30, inodes=1000, free_inodes=0)
    assert diagnose(STREAM_FAILED, target) == errno.ENOSPC


def test_a_library_error_on_a_read_only_mount_is_erofs(file_system, tmp_path):
    file_system.state = _statvfs(free=50 << 30, read_only=True)
    assert diagnose(TORCH_FAILED, tmp_path / "history.csv") == errno.EROFS
    file_system.state = _statvfs(free=0, read_only=True)  # full and read-only: the mount is what to fix
    assert diagnose(TORCH_FAILED, tmp_path / "history.csv") == errno.EROFS


def test_an_errno_quoted_in_the_text_wins_over_the_file_systems_state(file_system, tmp_path):
    # safetensors (Rust) quotes the OS error it got; the disk may have room again by the time we look.
    full = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                           '"No space left on device" })')
    assert diagnose(full, tmp_path / "best" / "model.safetensors") == errno.ENOSPC
    assert diagnose(RuntimeError("failed to write: No space left on device (os error 28)"), tmp_path) == 28
    file_system.state = _statvfs(free=0)  # a full disk, but the text says read-only: the text decides
    assert diagnose(RuntimeError("Os { code: 30, kind: ReadOnlyFilesystem }"), tmp_path) == errno.EROFS
    assert file_system.asked == []  # decided from the text alone


def test_anything_else_is_eio(file_system, tmp_path):
    file_system.state = _statvfs(free=FULL_BELOW_BYTES + 4096)  # room left: not a full disk
    assert diagnose(TORCH_FAILED, tmp_path / "x") == errno.EIO
    # A file system that reports no inodes at all (f_files 0: btrfs, many network file systems) is not full.
    file_system.state = _statvfs(free=50 << 30, inodes=0, free_inodes=0)
    assert diagnose(TORCH_FAILED, tmp_path / "x") == errno.EIO
    # A number that is no errno, or a file system that cannot be asked: EIO, not a guess.
    assert diagnose(RuntimeError("os error 99999"), tmp_path / "x") == errno.EIO
    file_system.state = OSError(errno.ESTALE, "Stale file handle")
    assert diagnose(TORCH_FAILED, tmp_path / "x") == errno.EIO


def test_an_os_error_keeps_its_errno(file_system, tmp_path):
    file_system.state = _statvfs(free=0)
    assert diagnose(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path) == errno.EDQUOT
    assert diagnose(PermissionError(errno.EACCES, "Permission denied"), tmp_path) == errno.EACCES
    assert file_system.asked == []


def test_as_os_error_names_the_users_path_and_says_the_cause(file_system, tmp_path):
    target = tmp_path / "checkpoints" / "epoch_0002"
    file_system.state = _statvfs(free=0)
    err = as_os_error(TORCH_FAILED, target)
    assert (type(err), err.errno, err.strerror, err.filename) == (OSError, errno.ENOSPC, os.strerror(errno.ENOSPC),
                                                                   str(target))
    # The temp file's name in an OSError gives way to the result's.
    err = as_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".tmp-epoch_0002")), target)
    assert (err.errno, err.filename) == (errno.ENOSPC, str(target))
    # EIO says little by itself: the library's own words stay in the text.
    file_system.state = _statvfs(free=50 << 30)
    err = as_os_error(TORCH_FAILED, target)
    assert err.errno == errno.EIO and "RuntimeError: " in err.strerror and "PytorchStreamWriter failed" in err.strerror


class _FileSizeLimit:
    """Files of this process cannot grow past `limit` bytes while inside: a write beyond it fails with
    EFBIG in the kernel (SIGXFSZ ignored, as it must be for the write to fail rather than kill us)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        self._previous = resource.getrlimit(resource.RLIMIT_FSIZE)
        self._handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self._previous[1]))

    def __exit__(self, *exc: object) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self._previous)
        signal.signal(signal.SIGXFSZ, self._handler)


def _left(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_atomic_write_texts_replaces_every_file(tmp_path):
    (tmp_path / "config.yaml").write_text("old config\n")
    atomic_write_texts({tmp_path / "config.yaml": "new config\n", tmp_path / "history.csv": "epoch\n1\n"})
    assert _left(tmp_path) == {"config.yaml": "new config\n", "history.csv": "epoch\n1\n"}
    assert {(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {RESULT_FILE_MODE}


def test_atomic_write_texts_failing_on_the_second_file_changes_neither(tmp_path):
    """config.yaml and history.csv of a run never disagree: the second file's write fails (here the
    kernel refuses to let it grow, as a full disk would), so the first, already written to its temp
    file, is not renamed onto the old one either; no temp file is left to fill the disk."""
    config, hist = tmp_path / "config.yaml", tmp_path / "history.csv"
    config.write_text("epochs: 2\n")
    hist.write_text("epoch\n1\n")
    before = _left(tmp_path)
    with _FileSizeLimit(1 << 16), pytest.raises(OSError) as caught:
        atomic_write_texts({config: "epochs: 3\n", hist: "epoch\n1\n2\n" + "x" * (1 << 17)})
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(hist)), caught.value
    assert _left(tmp_path) == before  # both old files, nothing else: no .config.yaml.*.tmp, no .history.csv.*.tmp


def test_atomic_write_texts_whose_second_temp_file_cannot_be_made_changes_neither(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("epochs: 2\n")
    (tmp_path / "plots").write_text("a file where the second result's folder should be")
    before = _left(tmp_path)
    with pytest.raises(OSError) as caught:
        atomic_write_texts({config: "epochs: 3\n", tmp_path / "plots" / "loss.csv": "1\n"})
    assert caught.value.filename == str(tmp_path / "plots" / "loss.csv")
    assert _left(tmp_path) == before


def test_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    result = tmp_path / "submission.csv"
    atomic_write_text(result, "id\n")
    with _FileSizeLimit(1 << 16), pytest.raises(OSError) as caught:
        atomic_write_text(result, "id\n" + "0.5\n" * (1 << 16))
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(result))
    assert _left(tmp_path) == {"submission.csv": "id\n"}
    # Not a write error (a bug in the writer): raised as it is, the temp file removed all the same.
    with pytest.raises(ZeroDivisionError):
        atomic_write(result, lambda tmp: (Path(tmp).write_text("half"), 1 / 0))
    assert _left(tmp_path) == {"submission.csv": "id\n"}


def test_a_real_full_and_read_only_tmpfs_are_diagnosed(tmp_path):
    """diagnose() on real mounts: statvfs's own numbers and flags, where root may mount a tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        target = disk / "run" / "checkpoints" / "epoch_0001"
        assert diagnose(TORCH_FAILED, target) == errno.EIO  # 2 MiB free: not full
        with pytest.raises(OSError) as caught, open(disk / "filler", "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 65536)
        assert caught.value.errno == errno.ENOSPC
        assert diagnose(TORCH_FAILED, target) == errno.ENOSPC
        (disk / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
        assert diagnose(TORCH_FAILED, target) == errno.EROFS
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
