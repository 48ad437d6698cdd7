"""Augmentation beyond the report's: torchvision's policies and RandomErasing on both loaders, and
multi-label mixup / cutmix, whose targets are mixed by the same weight as the pixels."""

import json

import pytest
import torch
import yaml
from torch import nn

from shards.classes import ClassList
from shards.presets import CROPPING, after_crop, train_transform
from shards.resident import per_image
from trainer.config import ConfigError, TrainConfig
from trainer.config.validate import validate
from trainer.recipe.loss import build_loss, logit_targets
from trainer.recipe.mixing import Mixer, build_mixer
from train_helpers import TINY, ddp, run


@pytest.mark.parametrize("preset", ["randaugment", "trivialaugment"])
def test_a_policy_follows_the_crop_and_flip_and_keeps_uint8(preset):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    out = train_transform(preset, 32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8 and preset in CROPPING


def test_random_erasing_blanks_a_box_and_zero_turns_it_off():
    image = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    erased = train_transform("none", 40, erasing=1.0)(image)
    assert 0 < int((erased == 0).all(0).sum()) < 40 * 40  # a box, not the image
    assert torch.equal(train_transform("none", 40, erasing=0.0)(image), image)
    assert after_crop("crop_flip", 0.0) is None  # nothing per image: the batched crop alone, as before


def test_the_device_loaders_per_image_policy_is_a_function_of_its_seed_and_differs_per_image():
    batch = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(6, 1, 1, 1)
    policy = after_crop("trivialaugment", 0.5)
    first, again = per_image(batch, policy, seed=11), per_image(batch, policy, seed=11)
    assert torch.equal(first, again)  # batch k after a resume gets the very same pixels
    assert len({tuple(img.flatten().tolist()) for img in first}) > 1  # not one operation for the whole batch
    before = torch.get_rng_state()
    per_image(batch, policy, seed=12)
    assert torch.equal(torch.get_rng_state(), before)  # the training RNG (dropout, ...) is not consumed


def test_mixup_mixes_pixels_and_targets_by_the_same_weight():
    torch.manual_seed(1)
    images, states = torch.randn(4, 3, 8, 8), torch.tensor([[1, -1], [-1, 1], [1, 1], [-1, -1]], dtype=torch.int8)
    mixed, how = Mixer(mixup=0.4)(images)
    lam = how.weight
    assert 0 < lam < 1 and torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0))
    targets = logit_targets(states, 0)
    assert torch.allclose(how.targets(targets), lam * targets + (1 - lam) * targets.flip(0))
    loss = build_loss("bce", ClassList(("a", "b")))
    logits = torch.randn(4, 2)
    expected = nn.functional.binary_cross_entropy_with_logits(logits, how.targets(targets))
    assert loss(logits, states, how) == pytest.approx(expected.item(), rel=1e-6)


def test_cutmix_pastes_a_box_from_the_partner_and_weights_targets_by_its_area():
    torch.manual_seed(3)
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 10, 20).clone()
    mixed, how = Mixer(cutmix=1.0)(images)
    pasted = (mixed[0, 0] == 3).float().mean().item()  # image 0's partner is image 3
    assert 0 < pasted < 1 and how.weight == pytest.approx(1 - pasted)
    assert torch.equal(mixed[0, :, mixed[0, 0] == 0], images[0, :, mixed[0, 0] == 0])  # the rest is its own


def test_with_both_each_batch_takes_one_and_off_draws_nothing():
    torch.manual_seed(5)
    kinds = set()
    for _ in range(20):
        mixed, how = Mixer(mixup=0.5, cutmix=0.5)(torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 6, 6).clone())
        kinds.add("cutmix" if set(mixed[0].unique().tolist()) <= {0.0, 1.0} else "mixup")
    assert kinds == {"mixup", "cutmix"}
    assert build_mixer(0.0, 0.0) is None


@pytest.mark.parametrize("flag, value", [("random_erasing", 1.5), ("mixup", -1.0), ("cutmix", -0.2)])
def test_bad_values_are_refused_naming_the_flag(shards_dir, tmp_path, flag, value):
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}"):
        validate(TrainConfig(shards=str(shards_dir), out=str(tmp_path / "run"), **{flag: value}))


@pytest.mark.slow
def test_two_processes_train_with_a_policy_erasing_mixup_and_cutmix_on_the_device_loader(shards_dir, tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--loader", "device", "--augment", "trivialaugment", "--random-erasing", "0.25", "--mixup", "0.4",
            "--cutmix", "1.0"]
    log = run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "1", *args]))
    summary, settings = json.loads((out / "summary.json").read_text()), yaml.safe_load((out / "config.yaml").read_text())
    assert 0 <= summary["test_map"] <= 1, log[-2000:]
    assert (settings["settings"]["augment"], settings["settings"]["mixup"], settings["settings"]["cutmix"],
            settings["settings"]["random_erasing"]) == ("trivialaugment", 0.4, 1.0, 0.25)
