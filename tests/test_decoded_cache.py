"""The decoded cache (shards.decoded_cache): built once, mapped after, never stale, never half-served."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.decoded_cache import DecodedCacheWarning, cache_root, entry_key, load_or_build
from shards.lock import FolderLock
from shards.resident import cached_eval_view, cached_raw, load_eval_view, load_raw

CPU = torch.device("cpu")


def never(*_: object):
    raise AssertionError("decoded again although the cache holds this entry")


def test_eval_view_and_stored_images_are_built_once_then_mapped_the_same(shards_dir, tmp_path):
    cache = tmp_path / "cache"
    decoded = load_eval_view(shards_dir, "val", image_size=48, device=CPU, num_workers=0)
    cold = cached_eval_view(cache, shards_dir, "val", image_size=48, device=CPU, num_workers=0)
    warm = cached_eval_view(cache, shards_dir, "val", image_size=48, device=CPU, num_workers=0)
    assert (cold.source, warm.source) == ("decoded", "cache")
    for view in (cold, warm):
        assert view.ids == decoded.ids and torch.equal(view.images, decoded.images)
        assert torch.equal(view.states, decoded.states)
    # A rank's share: every image exactly once over the ranks.
    shares = [cached_eval_view(cache, shards_dir, "val", image_size=48, device=CPU, num_workers=0, rank=r,
                               world_size=2) for r in (0, 1)]
    assert all(s.source == "cache" for s in shares) and sorted(shares[0].ids + shares[1].ids) == decoded.ids
    assert torch.equal(shares[1].images, decoded.images[1::2])

    raw = load_raw(shards_dir, "train", device=CPU, num_workers=0)
    for expected_source in ("decoded", "cache"):
        got = cached_raw(cache, shards_dir, "train", device=CPU, num_workers=0)
        assert got.source == expected_source and got.ids == raw.ids
        for name in ("images", "heights", "widths", "transposed", "states"):
            assert torch.equal(getattr(got, name), getattr(raw, name)), name
    # Another image size is another entry, not the 48 px one.
    assert cached_eval_view(cache, shards_dir, "val", image_size=40, device=CPU, num_workers=0).source == "decoded"
    assert len(list(cache.glob("val-eval*"))) == 2 and not list(cache.glob(".*tmp*"))


def test_a_repacked_set_gets_a_new_key(shards_dir, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards_dir, copy, ignore=shutil.ignore_patterns("cache"))
    view = {"kind": "eval", "image_size": 48}
    before = entry_key(copy, "val", view)
    assert entry_key(copy, "test", view) != before and entry_key(copy, "val", {**view, "image_size": 50}) != before
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = manifest["splits"]["val"]["shards"][0]
    manifest["sha256"][shard] = "0" * 64  # what a repack with other images records
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert entry_key(copy, "val", view) != before


def damage_truncate(entry: Path) -> None:
    path = entry / "images.npy"
    path.write_bytes(path.read_bytes()[:-100])


def damage_meta(entry: Path) -> None:
    (entry / "meta.json").write_text('{"key": ')


@pytest.mark.parametrize("damage", [damage_truncate, damage_meta, lambda entry: (entry / "states.npy").unlink()])
def test_a_damaged_entry_is_rebuilt_not_served(shards_dir, tmp_path, damage):
    cache = tmp_path / "cache"
    # A copy: the view maps the file that the damage below truncates in place.
    good = cached_eval_view(cache, shards_dir, "test", image_size=32, device=CPU, num_workers=0).images.clone()
    (entry,) = cache.glob("test-eval32-*")
    damage(entry)
    with pytest.warns(DecodedCacheWarning, match=f"{entry.name} is damaged"):
        rebuilt = cached_eval_view(cache, shards_dir, "test", image_size=32, device=CPU, num_workers=0)
    assert rebuilt.source == "decoded" and torch.equal(rebuilt.images, good)
    assert cached_eval_view(cache, shards_dir, "test", image_size=32, device=CPU, num_workers=0).source == "cache"


def test_a_second_builder_waits_for_the_first_and_maps_its_entry(tmp_path):
    cache, key = tmp_path / "cache", "ab" * 32
    arrays = {"pixels": np.arange(12, dtype=np.uint8)}
    cache.mkdir()
    entry = cache / f"x-{key[:24]}"
    # This test is the first builder: it holds the entry's lock while the second one starts.
    first = FolderLock(cache / f".{entry.name}.lock", "first builder", "building").acquire()
    result: dict = {}
    second = threading.Thread(target=lambda: result.update(got=load_or_build(cache, "x", key, never)))
    second.start()
    _until_waiting_for_the_lock(second)  # before the entry exists: it cannot have found it on the warm path
    built = load_or_build(tmp_path / "elsewhere", "x", key, lambda: (arrays, ["a"]))  # the first's decode
    shutil.copytree(tmp_path / "elsewhere" / entry.name, entry)
    first.release()
    second.join(timeout=60)
    assert not second.is_alive() and built.source == "decoded"
    assert result["got"].source == "cache" and np.array_equal(result["got"].arrays["pixels"], arrays["pixels"])


def _until_waiting_for_the_lock(thread: threading.Thread, limit: float = 60) -> None:
    """Return once `thread` is inside shards.decoded_cache's lock wait (read from its live stack)."""
    deadline = time.monotonic() + limit
    while True:
        frame = sys._current_frames().get(thread.ident)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if "_wait_for_lock" in names:
            return
        assert thread.is_alive() and time.monotonic() < deadline, "the second builder never waited for the lock"
        time.sleep(0.01)


def test_an_unwritable_cache_decodes_and_says_so(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    got = load_or_build(tmp_path / "file" / "cache", "x", "cd" * 32, lambda: ({"a": np.zeros(3, np.uint8)}, ["i"]))
    assert got.source.startswith("decoded, not cached: cannot write") and got.ids == ["i"]


def test_cache_root_setting(shards_dir, tmp_path):
    assert cache_root("off", shards_dir) is None
    assert cache_root(str(tmp_path / "c"), shards_dir) == tmp_path / "c"
    assert cache_root("auto", shards_dir) == shards_dir / "cache"  # a writable shard folder
