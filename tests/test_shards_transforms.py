"""shards.presets (the named views) and shards.transforms (on-device normalization)."""

from __future__ import annotations

import pytest
import torch

from shards.classes import IMAGENET_MEAN, IMAGENET_STD
from shards.presets import TRAIN_PRESETS, eval_transform, train_transform
from shards.transforms import normalize


@pytest.mark.parametrize("preset", TRAIN_PRESETS)
def test_every_preset_gives_a_square_uint8_view(preset: str) -> None:
    image = torch.randint(0, 256, (3, 256, 341), dtype=torch.uint8)
    out = train_transform(preset, size=96)(image)
    assert out.shape == (3, 96, 96) and out.dtype == torch.uint8


def test_eval_view_is_resize_then_center_crop() -> None:
    # Left third black, right two thirds white: the centre crop of the resized image keeps a
    # black band on the left only.
    image = torch.zeros(3, 300, 450, dtype=torch.uint8)
    image[:, :, 150:] = 255
    out = eval_transform(100)(image)
    assert out.shape == (3, 100, 100)
    assert out[:, :, :10].max() == 0 and out[:, :, 60:].min() == 255
    assert torch.equal(train_transform("none", 100)(image), out)


def test_crop_flip_is_random_and_unknown_presets_are_refused() -> None:
    image = torch.randint(0, 256, (3, 256, 341), dtype=torch.uint8)
    torch.manual_seed(0)
    views = [train_transform("crop_flip", 64)(image) for _ in range(4)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    with pytest.raises(ValueError, match="choose one of none, flip, crop_flip"):
        train_transform("rotate", 64)


def test_normalize_matches_imagenet_statistics() -> None:
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 3, 4, 3)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 3)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    with pytest.raises(TypeError, match="expects uint8"):
        normalize(out)
