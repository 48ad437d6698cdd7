"""shards.bench: both pipelines give the same tensors; the last line is the JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torchvision.datasets import VOCDetection

from shards.bench import folder_batches, main, shard_batches, states_from_target
from shards.manifest import load_manifest
from shards.reader import eval_loader


def test_folder_labels_equal_the_shard_labels(voc_root: Path, shards_dir: Path) -> None:
    dataset = VOCDetection(str(voc_root.parent), year="2007", image_set="val")
    folder = {Path(dataset.images[i]).stem: states_from_target(dataset[i][1]).tolist() for i in range(len(dataset))}
    shards = {i: s.tolist() for _, states, ids in eval_loader(shards_dir, split="val", batch_size=8, rank=0,
                                                              world_size=1, num_workers=0, image_size=32)
              for i, s in zip(ids, states)}
    assert folder == shards and len(folder) == load_manifest(shards_dir)["splits"]["val"]["count"]


def test_both_pipelines_yield_the_same_tensor_shapes(voc_root: Path, shards_dir: Path) -> None:
    a_images, a_states = next(folder_batches(voc_root, "train", batch_size=4, workers=0))
    b_images, b_states = next(shard_batches(shards_dir, "train", batch_size=4, workers=0))
    assert a_images.shape == b_images.shape == (4, 3, 227, 227)
    assert a_images.dtype == b_images.dtype and a_states.dtype == b_states.dtype and a_states.shape == b_states.shape


def test_cli_prints_the_json_line_last(voc_root: Path, shards_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--voc", str(voc_root), "--shards", str(shards_dir), "--workers", "0", "--batch-size", "4",
                 "--batches", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert set(result) == {"folder_images_per_s", "shards_images_per_s", "ratio"}
    assert result["folder_images_per_s"] > 0 and result["shards_images_per_s"] > 0
