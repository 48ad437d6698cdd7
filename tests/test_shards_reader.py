"""shards.reader: equal train batches on every rank; every eval sample exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from shards.classes import VOC_CLASSES
from shards.manifest import load_manifest
from shards.reader import eval_loader, steps_per_epoch, train_loader

BATCH = 4


def _devkit_states(voc_root: Path, split: str) -> dict[str, list[int]]:
    states: dict[str, list[int]] = {}
    for c, name in enumerate(VOC_CLASSES):
        for line in (voc_root / "VOC2007" / "ImageSets" / "Main" / f"{name}_{split}.txt").read_text().splitlines():
            image_id, state = line.split()
            states.setdefault(image_id, [0] * len(VOC_CLASSES))[c] = int(state)
    return states


def _train_ids(shards_dir: Path, rank: int, epoch: int, num_workers: int = 0) -> list[list[str]]:
    loader = train_loader(shards_dir, batch_size=BATCH, rank=rank, world_size=2, num_workers=num_workers,
                          seed=3, epoch=epoch, preset="crop_flip", image_size=64)
    return [ids for _, _, ids in loader]


def test_steps_per_epoch_follows_the_contract(shards_dir: Path) -> None:
    count = load_manifest(shards_dir)["splits"]["train"]["count"]  # 24
    assert steps_per_epoch(shards_dir, batch_size=BATCH, world_size=2) == count // (BATCH * 2)
    assert steps_per_epoch(shards_dir, batch_size=64, world_size=2) == 1  # never zero


def test_train_loader_gives_every_rank_the_same_batch_count(voc_root: Path, shards_dir: Path) -> None:
    steps = steps_per_epoch(shards_dir, batch_size=BATCH, world_size=2)
    expected_states = _devkit_states(voc_root, "train")
    for rank in (0, 1):
        # Two workers: the rank's shards (3 or 2 of 5) are dealt to them, the batches cut to `steps`.
        loader = train_loader(shards_dir, batch_size=BATCH, rank=rank, world_size=2, num_workers=2,
                              seed=0, epoch=0, preset="crop_flip", image_size=64)
        batches = list(loader)
        assert len(batches) == len(loader) == steps
        for images, states, ids in batches:
            assert images.shape == (BATCH, 3, 64, 64) and images.dtype == torch.uint8
            assert states.dtype == torch.int8
            assert states.tolist() == [expected_states[i] for i in ids]


def test_train_loader_covers_more_steps_than_a_rank_has_shards(shards_dir: Path) -> None:
    # One rank, batch 8 -> 3 steps from 24 samples: the worker cycles its shards as needed.
    loader = train_loader(shards_dir, batch_size=8, rank=0, world_size=1, num_workers=0, seed=0, epoch=0,
                          preset="crop_flip", image_size=32)
    assert sum(1 for _ in loader) == 3


def test_train_order_is_a_function_of_seed_epoch_and_rank(shards_dir: Path) -> None:
    first = _train_ids(shards_dir, rank=0, epoch=0)
    assert _train_ids(shards_dir, rank=0, epoch=0) == first
    assert _train_ids(shards_dir, rank=0, epoch=0, num_workers=2) == _train_ids(shards_dir, rank=0, epoch=0,
                                                                                num_workers=2)
    assert _train_ids(shards_dir, rank=0, epoch=1) != first
    assert _train_ids(shards_dir, rank=1, epoch=0) != first
    # Within an epoch the two ranks read disjoint shards, so they see different images.
    rank0 = {i for ids in first for i in ids}
    rank1 = {i for ids in _train_ids(shards_dir, rank=1, epoch=0) for i in ids}
    assert not rank0 & rank1


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_loader_reads_every_sample_once_over_ranks_and_workers(voc_root: Path, shards_dir: Path,
                                                                     split: str) -> None:
    expected_states = _devkit_states(voc_root, split)
    seen: Counter = Counter()
    for rank in (0, 1):
        for images, states, ids in eval_loader(shards_dir, split=split, batch_size=BATCH, rank=rank,
                                               world_size=2, num_workers=2, image_size=48):
            assert images.shape[1:] == (3, 48, 48) and images.dtype == torch.uint8
            assert states.tolist() == [expected_states[i] for i in ids]
            seen.update(ids)
    assert sorted(seen) == load_manifest(shards_dir)["splits"][split]["ids"]
    assert set(seen.values()) == {1}


def test_eval_loader_with_more_ranks_than_shards(shards_dir: Path) -> None:
    # val has 4 shards; ranks 4..5 of 6 get none and must simply yield nothing.
    seen = Counter(i for rank in range(6) for _, _, ids in eval_loader(
        shards_dir, split="val", batch_size=BATCH, rank=rank, world_size=6, num_workers=2, image_size=32)
        for i in ids)
    assert sorted(seen) == load_manifest(shards_dir)["splits"]["val"]["ids"] and set(seen.values()) == {1}


def test_loaders_reject_bad_arguments(shards_dir: Path) -> None:
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        train_loader(shards_dir, batch_size=2, rank=2, world_size=2, num_workers=0, seed=0, epoch=0, preset="none",
                     image_size=32)
    with pytest.raises(ValueError, match="unknown train preset 'zoom'"):
        train_loader(shards_dir, batch_size=2, rank=0, world_size=1, num_workers=0, seed=0, epoch=0, preset="zoom",
                     image_size=32)
    with pytest.raises(FileNotFoundError, match="no split 'trainval'"):
        eval_loader(shards_dir, split="trainval", batch_size=2, rank=0, world_size=1, num_workers=0, image_size=32)
