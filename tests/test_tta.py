"""--tta flip: a model that tells left from right gets the average of its two views' probabilities, in
the trainer's evaluation and in trainer.predict's scoring; the flag is checked and frozen on --resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from shards.classes import VOC
from shards.transforms import normalize
from trainer.config import ConfigError, as_dict, parse_config
from trainer.evaluation.evaluate import evaluate
from trainer.rundir.provenance import run_config_text
from trainer.tools.run_model import RunModel, Weights, class_scores

SIZE = 8


class LeftHanded(nn.Module):
    """Logits from the left half of the image only: a mirror changes them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * SIZE * (SIZE // 2), VOC.num_logits)
        torch.nn.init.normal_(self.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[..., : SIZE // 2].flatten(1))


@pytest.fixture
def accelerator() -> Accelerator:
    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    states = torch.where(torch.rand(5, VOC.num_classes, generator=generator) < 0.4, 1, -1).to(torch.int8)
    ids = [f"{i:06d}" for i in range(5)]
    return [(images[:3], states[:3], ids[:3]), (images[3:], states[3:], ids[3:])]


def _by_hand(model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(plain probabilities, the mean of the plain and the mirrored ones), VOC's background logit left out."""
    with torch.no_grad():
        plain = torch.sigmoid(model(normalize(images))[:, 1:])
        mirrored = torch.sigmoid(model(normalize(images.flip(-1)))[:, 1:])
    return plain.numpy(), ((plain + mirrored) / 2).numpy()


def test_evaluate_with_flip_averages_the_two_views(accelerator):
    model, batches = LeftHanded(), _batches()
    images = torch.cat([b[0] for b in batches])
    plain, averaged = _by_hand(model, images)
    # the model is not flip-invariant (the test can fail); atol 1e-5 below: batches of 3 + 2 against one of 5
    assert not np.allclose(plain, averaged, atol=1e-3)
    ids = [i for b in batches for i in b[2]]
    flip = evaluate(model, batches, accelerator, classes=VOC, expected_ids=ids, tta="flip")
    none = evaluate(model, batches, accelerator, classes=VOC, expected_ids=ids)
    np.testing.assert_allclose(flip.scores, averaged, atol=1e-5)
    np.testing.assert_allclose(none.scores, plain, atol=1e-5)
    assert flip.metrics["map"] != none.metrics["map"] or flip.metrics["thresholded"] != none.metrics["thresholded"]


def test_predict_scores_with_flip_average_the_two_views(accelerator):
    model = LeftHanded().eval()
    images = _batches()[0][0]
    run = RunModel(cfg=None, classes=VOC, model=model, weights=Weights("final", None, None, ""))
    plain, averaged = _by_hand(model, images)
    np.testing.assert_allclose(class_scores(run, images, accelerator, "flip"), averaged, atol=1e-5)
    np.testing.assert_allclose(class_scores(run, images, accelerator), plain, atol=1e-5)


@pytest.fixture
def base(shards_dir, tmp_path) -> list[str]:
    return ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]


def test_the_flag_is_checked_and_defaults_to_none(base, tmp_path):
    assert parse_config(base).tta == "none" and parse_config(base + ["--tta", "flip"]).tta == "flip"
    with pytest.raises(ConfigError, match=r"^--tta: invalid choice: 'mirror'"):
        parse_config(base + ["--tta", "mirror"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tta: mirror\n")
    with pytest.raises(ConfigError, match=r"^--tta \(from .*r\.yaml\): 'mirror' is not one of none, flip"):
        parse_config(base + ["--config", str(recipe)])


def test_resume_keeps_the_runs_tta(shards_dir, tmp_path):
    run = tmp_path / "saved"
    run.mkdir()
    settings = parse_config(["--shards", str(shards_dir), "--out", str(run), "--tta", "flip"])
    (run / "config.yaml").write_text(run_config_text(as_dict(settings), world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    resume = ["--out", str(run), "--resume"]
    assert parse_config(resume).tta == "flip"  # inherited
    with pytest.raises(ConfigError, match=r"^--tta: 'none' differs from 'flip' in .*config\.yaml"):
        parse_config(resume + ["--tta", "none"])
