"""The device-resident loader in one process: its crops, its epoch order, its eval view, its choice.

The training runs with it (2 processes, stop and resume) are in tests/test_train_device.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from shards.device_views import crop_boxes, crop_flips, random_flips, resized_crop_flips
from shards.manifest import load_manifest
from shards.resident import padded
from trainer.data.stream import ShardStream
from trainer.data.choose import AUTO_FRACTION, choose_loader
from trainer.data.device import DeviceData, device_bytes
from trainer.config import ConfigError, TrainConfig

SIZES = [(256, 341), (341, 256), (256, 256), (256, 900), (97, 120)]


def test_crop_flips_equal_torchvision_resized_crop_and_flip_of_each_box():
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in SIZES]
    stored, heights, widths, transposed = padded(images)
    assert stored.shape == (len(SIZES), 3, 256, 900) and transposed.tolist() == [False, True, False, False, False]
    for _ in range(10):
        boxes = crop_boxes(heights, widths, generator)
        flips = torch.rand(len(images), generator=generator) < 0.5
        batch = resized_crop_flips(stored, transposed, boxes, flips, 61)
        assert batch.shape == (len(images), 3, 61, 61) and batch.dtype == torch.uint8
        on_cpu = crop_flips(stored, heights, widths, transposed, boxes, flips, 61)
        for image, box, flip, crop, cpu_crop in zip(images, boxes.tolist(), flips.tolist(), batch, on_cpu):
            top, left, h, w = box
            assert 0 <= top and top + h <= image.shape[1] and 0 <= left and left + w <= image.shape[2]
            # The same box through torchvision (bilinear, no antialias), then the flip: at most 1 grey
            # level apart (rounding), the padding and the neighbouring rows never leak in.
            expected = F.resized_crop(image, top, left, h, w, [61, 61], antialias=False)
            expected = expected.flip(-1) if flip else expected
            assert (expected.int() - crop.int()).abs().max() <= 1, box
            # On CPU `crop_flips` is torchvision's own antialiased kernel, per image (faster there).
            antialiased = F.resized_crop(image, top, left, h, w, [61, 61], antialias=True)
            assert torch.equal(cpu_crop, antialiased.flip(-1) if flip else antialiased)


def box_statistics(boxes: torch.Tensor, height: int, width: int) -> list[float]:
    """Mean area fraction, mean and spread of the log aspect ratio, mean horizontal centre."""
    boxes = boxes.double()
    log_ratio = torch.log(boxes[:, 3] / boxes[:, 2])
    return [float(v) for v in ((boxes[:, 2] * boxes[:, 3]).mean() / (height * width), log_ratio.mean(),
                               log_ratio.std(), ((boxes[:, 1] + boxes[:, 3] / 2) / width).mean())]


def test_crop_boxes_follow_torchvision_distribution_and_fallback():
    ours = crop_boxes(torch.full((4000,), 256), torch.full((4000,), 341), torch.Generator().manual_seed(1))
    torch.manual_seed(1)  # get_params draws from the global generator
    theirs = torch.tensor([v2.RandomResizedCrop.get_params(torch.empty(3, 256, 341), [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(4000)])
    # 4000 draws each: standard errors ~0.005 (area), ~0.003 (log ratio); 0.03 is a wide margin.
    assert box_statistics(ours, 256, 341) == pytest.approx(box_statistics(theirs, 256, 341), abs=0.03)
    # No try fits a 10 x 1000 image (the smallest box is 800 px^2, too tall): torchvision's fallback
    # is the full height at the widest ratio, centred.
    fallback = crop_boxes(torch.tensor([10]), torch.tensor([1000]), torch.Generator().manual_seed(0))
    width = round(10 * 4 / 3)
    assert fallback.tolist() == [[0, (1000 - width) // 2, 10, width]]


def test_random_flips_mirror_about_half_and_keep_the_rest():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5).repeat(200, 1, 1, 1)
    flipped = random_flips(images, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert ((flipped == images).flatten(1).all(1) | mirrored).all()
    assert 150 < int(mirrored.sum()) < 250


def config(shards_dir, **overrides) -> TrainConfig:
    return TrainConfig(shards=str(shards_dir), out="unused", image_size=40, batch_size=4, workers=1, **overrides)


@pytest.mark.parametrize("augment", ["crop_flip", "flip", "none", "randaugment"])
def test_an_epoch_deals_every_rank_the_same_full_batches_without_repeats(shards_dir, augment, tmp_path):
    cache = str(tmp_path / "cache")
    erasing = 0.5 if augment == "randaugment" else 0.0  # the per-image steps after the crop, resumed alike too
    ranks = [DeviceData(config(shards_dir, augment=augment, decoded_cache=cache, random_erasing=erasing), rank=r,
                        world_size=2, device=torch.device("cpu")) for r in range(2)]
    # Rank 0 decoded every split into the cache, rank 1 mapped them all (its train share too).
    assert ranks[0].source == "decoded" and ranks[1].source == "cache", (ranks[0].source, ranks[1].source)
    assert "mapped" in ranks[1].describe() and "cached in" in ranks[0].describe()
    epochs = {}
    for epoch in (1, 2):
        batches = [list(data.train(epoch)) for data in ranks]
        assert [len(b) for b in batches] == [ranks[0].batches] * 2 == [24 // 8] * 2
        ids = [i for rank_batches in batches for _, _, batch_ids in rank_batches for i in batch_ids]
        assert len(ids) == len(set(ids)) == 24  # 24 train images, 8 per global step: each once
        for images, states, batch_ids in batches[0]:
            assert images.shape == (4, 3, 40, 40) and images.dtype == torch.uint8 and states.shape == (4, 20)
        epochs[epoch] = ids
    assert epochs[1] != epochs[2]  # a new permutation per epoch

    # Batch k is a function of (seed, epoch, rank, k): resuming at k gives the very same pixels.
    again = list(ranks[1].train(1, skip=2))
    assert len(again) == 1 and torch.equal(again[0][0], list(ranks[1].train(1))[2][0])


def test_eval_view_is_the_streaming_loaders_pixels_and_every_image_once(shards_dir):
    cfg = config(shards_dir, augment="crop_flip")
    expected = load_manifest(shards_dir)["splits"]
    for split in ("train", "val", "test"):
        streamed = {i: image for rank in range(2) for images, _, batch_ids in
                    ShardStream(cfg, rank=rank, world_size=2).eval(split)[0] for i, image in zip(batch_ids, images)}
        seen = {}
        for rank in range(2):
            device_batches, ids = DeviceData(cfg, rank=rank, world_size=2, device=torch.device("cpu")).eval(split)
            for images, _, batch_ids in device_batches:
                for image_id, image in zip(batch_ids, images):
                    assert image_id not in seen
                    seen[image_id] = image
                    # The streaming loader's pixels (the ranks share the split out differently).
                    assert torch.equal(image, streamed[image_id])
            assert ids == expected[split]["ids"]
        assert sorted(seen) == expected[split]["ids"]


def test_trainval_without_val_split_trains_on_both_and_evaluates_only_them_and_test(shards_dir):
    # No loader workers: this checks which images, not how they are read (a worker start costs seconds).
    cfg = TrainConfig(shards=str(shards_dir), out="unused", image_size=40, batch_size=4, workers=0, augment="none",
                      train_splits="train,val", val_split="none")
    splits = load_manifest(shards_dir)["splits"]
    trainval = sorted(splits["train"]["ids"] + splits["val"]["ids"])
    ranks = [DeviceData(cfg, rank=r, world_size=2, device=torch.device("cpu")) for r in range(2)]
    assert ranks[0].batches == 40 // 8 and ranks[0].train_positives()[1] == 40
    ids = [i for data in ranks for _, _, batch_ids in data.train(1) for i in batch_ids]
    assert sorted(ids) == trainval  # all of train and val, each once per epoch
    assert sorted(ranks[0].views) == ["test", "train+val"]  # no val view: nothing selects on it
    assert ranks[0].eval("train+val")[1] == trainval
    streamed = {i for _, _, batch_ids in ShardStream(cfg, rank=0, world_size=1).train(1) for i in batch_ids}
    assert streamed <= set(trainval) and streamed & set(splits["val"]["ids"])
    assert device_bytes(cfg, 2) == 3 * 40 * 40 * (40 + 9)  # all of train+val, this rank's half of test (17)


def test_choice_between_loaders_names_the_numbers():
    gb = 10**9
    assert choose_loader("stream", 0, 0, "cpu")[0] == "stream"
    name, why = choose_loader("auto", 2 * gb, 80 * gb, "cuda")
    assert name == "device" and "2.00 GB per process, 80.00 GB free on cuda" in why
    name, why = choose_loader("auto", int(AUTO_FRACTION * 10 * gb) + 1, 10 * gb, "cuda")
    assert name == "stream" and "over the 50% auto limit" in why
    assert choose_loader("device", 8 * gb, 10 * gb, "cuda")[0] == "device"
    with pytest.raises(ConfigError, match=r"--loader device: the decoded splits need 9\.50 GB per process, "
                                          r"10\.00 GB free on cuda .*use --loader stream"):
        choose_loader("device", math.floor(9.5 * gb), 10 * gb, "cuda")
