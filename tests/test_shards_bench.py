"""shards.bench: both pipelines give the same tensors; the last line is the JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.datasets import VOCDetection

from shards.bench import device_batches, folder_batches, main, shard_batches, states_from_target
from shards.manifest import load_manifest
from shards.reader import eval_loader
from shards.resident import load_raw


def test_folder_labels_equal_the_shard_labels(voc_root: Path, shards_dir: Path) -> None:
    dataset = VOCDetection(str(voc_root.parent), year="2007", image_set="val")
    folder = {Path(dataset.images[i]).stem: states_from_target(dataset[i][1]).tolist() for i in range(len(dataset))}
    shards = {i: s.tolist() for _, states, ids in eval_loader(shards_dir, split="val", batch_size=8, rank=0,
                                                              world_size=1, num_workers=0, image_size=32)
              for i, s in zip(ids, states)}
    assert folder == shards and len(folder) == load_manifest(shards_dir)["splits"]["val"]["count"]


def test_all_pipelines_yield_the_same_tensor_shapes(voc_root: Path, shards_dir: Path) -> None:
    a_images, a_states = next(folder_batches(voc_root, "train", batch_size=4, workers=0))
    b_images, b_states = next(shard_batches(shards_dir, "train", batch_size=4, workers=0))
    c_images, c_states = next(device_batches(load_raw(shards_dir, "train", device=torch.device("cpu"),
                                                      num_workers=0), batch_size=4))
    assert a_images.shape == b_images.shape == c_images.shape == (4, 3, 227, 227)
    assert a_images.dtype == b_images.dtype == c_images.dtype
    assert a_states.dtype == b_states.dtype == c_states.dtype and a_states.shape == b_states.shape == c_states.shape


def test_device_batches_go_on_past_an_epoch(shards_dir: Path) -> None:
    raw = load_raw(shards_dir, "train", device=torch.device("cpu"), num_workers=0)
    batches = device_batches(raw, batch_size=5)
    per_epoch = len(raw.ids) // 5  # the last partial batch is dropped, as in training
    shapes = {next(batches)[0].shape for _ in range(2 * per_epoch + 1)}
    assert shapes == {(5, 3, 227, 227)}
    with pytest.raises(ValueError, match="fewer than one batch"):
        next(device_batches(raw, batch_size=len(raw.ids) + 1))


def test_cli_prints_the_json_line_last(voc_root: Path, shards_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--voc", str(voc_root), "--shards", str(shards_dir), "--workers", "0", "--batch-size", "4",
                 "--batches", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert set(result) == {"folder_images_per_s", "shards_images_per_s", "ratio", "device_images_per_s",
                           "device_ratio", "device_load_seconds", "device"}
    assert result["folder_images_per_s"] > 0 and result["shards_images_per_s"] > 0
    assert result["device_images_per_s"] > 0 and result["device_load_seconds"] > 0
    assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert result["device_ratio"] == pytest.approx(result["device_images_per_s"] / result["folder_images_per_s"],
                                                   rel=0.05)
