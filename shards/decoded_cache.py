"""A shard set decoded once, kept on disk as memory-mapped uint8 arrays, for every later run.

The device loader (shards.resident) needs a split's images decoded: the stored images for
RandomResizedCrop, or the eval view (Resize + CenterCrop to --image-size). Decoding VOC07 takes
seconds on 12 cores and minutes on a laptop, in every run, for the same bytes. Here a split's
decoded arrays are written once to `ROOT/SPLIT-KIND-KEY/` (one .npy per array plus meta.json
with the ids) and mapped (numpy mmap) by every later run: a warm start reads pages, not JPEGs,
and processes on one host share those pages.

- The key hashes what the arrays are a function of: the split's shard files (their sha256 from
  the manifest; size and mtime for shards packed before checksums existed), the image policy,
  the view (stored images, or the eval view at one image size), CACHE_VERSION and the torch /
  torchvision versions (their resize kernels). A repacked set or another size gets another entry;
  nothing stale is served. Old entries stay until removed: the folder may be deleted at any time.
- An entry is built in a hidden `.NAME.tmp-PID` folder and renamed into place when complete, so a
  reader never sees half of one. Builders take an flock (shards.lock) per entry; a second run that
  needs the same entry waits for the first instead of decoding it again, then maps its result.
- An entry that is there but unreadable (meta.json missing or damaged, an array missing,
  truncated or of the wrong shape) is removed and rebuilt, with a warning; never served.
- Where (`--decoded-cache`, trainer.config.fields): `auto` = `SHARDS/cache/` when the shard folder is
  writable, else `$XDG_CACHE_HOME/voc-trainer/decoded` (~/.cache/...); `off`; or a folder.
  A cache that cannot be written (read-only, disk full) is not fatal: the run decodes as
  without one and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.lock import FolderBusy, FolderLock
from shards.manifest import load_manifest, split_entry

CACHE_VERSION = 1  # bump when what a view holds changes (shards.presets' eval view, the decoder)
META = "meta.json"
POLL_S = 0.2
BUILD_WAIT_S = 3600.0  # a builder holding an entry's lock longer than this is taken for stuck


class DecodedCacheWarning(UserWarning):
    """A cache entry that was damaged (and rebuilt) or could not be written."""


@dataclass
class Decoded:
    """A split's decoded arrays (row i belongs to ids[i], ids sorted) and where they came from."""

    arrays: dict[str, np.ndarray]
    ids: list[str]
    source: str  # "cache" (mapped), "decoded" (and written to the cache), "decoded, not cached: WHY"
    seconds: float


def cache_root(setting: str, shards_dir: str | Path) -> Path | None:
    """The folder `--decoded-cache SETTING` names for `shards_dir` (None for off)."""
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting)
    shards_dir = Path(shards_dir)
    inside = shards_dir / "cache"
    if os.access(inside if inside.is_dir() else shards_dir, os.W_OK):
        return inside
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "voc-trainer" / "decoded"


def entry_key(shards_dir: str | Path, split: str, view: dict) -> str:
    """The hex digest naming `split`'s `view` (e.g. {"kind": "eval", "image_size": 227}) of this shard set."""
    import torch
    import torchvision

    manifest = load_manifest(shards_dir)
    entry = split_entry(manifest, split, shards_dir)
    recorded = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    shards = []
    for name in entry["shards"]:
        if name in recorded:
            shards.append([name, recorded[name]])
        else:  # no checksum: a rewritten file changes size or mtime
            stat = (Path(shards_dir) / name).stat()
            shards.append([name, stat.st_size, stat.st_mtime_ns])
    what = {"version": CACHE_VERSION, "split": split, "view": view, "shards": shards, "count": entry["count"],
            "image_policy": manifest.get("image_policy"), "torch": torch.__version__.split("+")[0],
            "torchvision": torchvision.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def load_or_build(root: Path | None, name: str, key: str,
                  build: Callable[[], tuple[dict[str, np.ndarray], list[str]]]) -> Decoded:
    """The entry `name` (e.g. "train-raw") of `key` under `root`, mapped; built by `build` when absent."""
    start = time.perf_counter()
    if root is None:
        arrays, ids = build()
        return Decoded(arrays, ids, "decoded", time.perf_counter() - start)
    entry = root / f"{name}-{key[:24]}"
    found = _open(entry, key)  # the warm path takes no lock: a read-only cache folder serves too
    if isinstance(found, Decoded):
        found.seconds = time.perf_counter() - start
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = _wait_for_lock(root / f".{entry.name}.lock", entry)
    except OSError as err:
        arrays, ids = build()
        why = f"cannot write {root}: {err.strerror or err}"
        return Decoded(arrays, ids, f"decoded, not cached: {why}", time.perf_counter() - start)
    try:
        found = _open(entry, key)  # another process may have built it while we waited
        if isinstance(found, str):
            if entry.exists():
                warnings.warn(f"decoded cache {entry} is damaged ({found}): rebuilding it", DecodedCacheWarning)
                shutil.rmtree(entry, ignore_errors=True)
            found = _build_and_map(entry, key, build)
    finally:
        lock.release()
    found.seconds = time.perf_counter() - start
    return found


def _build_and_map(entry: Path, key: str, build: Callable[[], tuple[dict[str, np.ndarray], list[str]]]) -> Decoded:
    """Decode, write the entry, and serve it mapped (pages shared with the other processes of the
    host, not this process's private copy); the decoded arrays when it could not be written or read."""
    arrays, ids = build()
    why = _write(entry, key, arrays, ids)
    mapped = _open(entry, key) if why is None else why
    if isinstance(mapped, str):
        return Decoded(arrays, ids, f"decoded, not cached: {mapped}", 0.0)
    mapped.source = "decoded"
    return mapped


def _wait_for_lock(path: Path, entry: Path) -> FolderLock:
    lock = FolderLock(path, f"decoded cache {entry}", "being built by another process")
    deadline = time.monotonic() + BUILD_WAIT_S
    while True:
        try:
            return lock.acquire()
        except FolderBusy:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {BUILD_WAIT_S:.0f} s for another process to build {entry}; "
                                   f"remove {path} if no process is building it, or use --decoded-cache off") from None
            time.sleep(POLL_S)


def _write(entry: Path, key: str, arrays: dict[str, np.ndarray], ids: list[str]) -> str | None:
    """None when the entry is in place, else why it is not (nothing half-written stays)."""
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for array_name, array in arrays.items():
            with open(tmp / f"{array_name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(array))
                f.flush()
                os.fsync(f.fileno())
        meta = {"key": key, "ids": ids,
                "arrays": {n: {"shape": list(a.shape), "dtype": a.dtype.str} for n, a in arrays.items()}}
        (tmp / META).write_text(json.dumps(meta))  # last: its presence means every array is complete
        os.rename(tmp, entry)
        return None
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        why = f"cannot write {entry}: {err.strerror or err}"
        warnings.warn(f"decoded cache: {why}; this run decoded without it", DecodedCacheWarning)
        return why


def _open(entry: Path, key: str) -> Decoded | str:
    """The entry's arrays mapped, or why it cannot be served."""
    try:
        meta = json.loads((entry / META).read_text())
        if meta.get("key") != key:
            return "its key differs from its name"
        arrays = {}
        for array_name, spec in meta["arrays"].items():
            path, shape = entry / f"{array_name}.npy", tuple(spec["shape"])
            # Copy-on-write: writable for torch.from_numpy, and pages stay shared while only read.
            array = np.load(path, mmap_mode="c") if np.prod(shape) > 0 else np.load(path)
            if array.shape != shape or array.dtype.str != spec["dtype"]:
                return f"{path.name} holds {array.dtype.str} {array.shape}, meta.json says {spec['dtype']} {shape}"
            arrays[array_name] = array
        ids = meta["ids"]
    except FileNotFoundError as err:
        return f"{Path(err.filename or entry).name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return Decoded(arrays, ids, "cache", 0.0)
