"""--model with torchvision names, --pretrained, --weights and --image-size: refused before launch in one
line naming the flag, fixed on --resume, and what the trainer and a run's tools build (fast, no training)."""

from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from cli_in_process import run_module
from models import PretrainedWeightsMissing
from models.torchvision_zoo import imagenet_file
from shards.classes import VOC
from trainer.config import ConfigError, as_dict, parse_config
from trainer.recipe.network import build_model
from trainer.rundir.provenance import run_config_text
from trainer.tools.run_model import architecture


@pytest.fixture
def base(shards_dir, tmp_path):
    return ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def mobilenet_file(empty_torch_home) -> Path:
    """A stand-in for torchvision's ImageNet file of mobilenet_v3_small, where the hub cache keeps it."""
    path = Path(imagenet_file("mobilenet_v3_small"))
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(get_model("mobilenet_v3_small", weights=None).state_dict(), path)
    return path


def test_a_missing_imagenet_file_is_one_line_naming_it_and_exit_2(base, empty_torch_home, capsys):
    code, out, err = run_module("trainer.config", base + ["--model", "mobilenet_v3_small", "--pretrained"], capsys)
    expected = empty_torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --pretrained: mobilenet_v3_small needs the ImageNet weights") and str(expected) in err
    with pytest.raises(ConfigError) as refusal:  # trainer.suite files such a run under "no weights"
        parse_config(base + ["--model", "mobilenet_v3_small", "--pretrained"])
    assert isinstance(refusal.value.__cause__, PretrainedWeightsMissing)


def test_pretrained_reads_the_cache_or_weights_and_the_trainer_builds_it(base, mobilenet_file, tmp_path):
    cfg = parse_config(base + ["--model", "mobilenet_v3_small", "--pretrained", "--image-size", "32"])
    assert cfg.pretrained and cfg.weights is None
    model = build_model(cfg, VOC)
    saved = torch.load(mobilenet_file, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], saved["features.0.0.weight"])
    assert model.classifier[3].out_features == VOC.num_logits
    # A run's tools rebuild the network without the ImageNet file (its weights come from the run).
    assert (architecture(cfg).model, architecture(cfg).pretrained) == ("mobilenet_v3_small", False)
    mobilenet_file.rename(tmp_path / "elsewhere.pth")
    cfg = parse_config(base + ["--model", "mobilenet_v3_small", "--pretrained", "--weights",
                               str(tmp_path / "elsewhere.pth"), "--freeze-features"])
    assert (cfg.pretrained, cfg.freeze_features) == (True, True)


@pytest.mark.parametrize("extra, message", [
    (["--model", "vocnet", "--pretrained"], r"^--pretrained: model vocnet has no ImageNet weights to load; the "
                                            r"torchvision-named and timm/ models have them"),
    (["--model", "resnet18_pretrained", "--pretrained"], r"^--pretrained: model resnet18_pretrained loads its ImageNet weights already: drop --pretrained$"),
    (["--model", "mobilenet_v3_small", "--freeze-features"], r"^--freeze-features: goes with ImageNet weights: add "
                                                             r"--pretrained"),
    (["--model", "vit_b_16", "--image-size", "448"], r"^--model vit_b_16 --image-size 448: .*it takes 224 only$"),
    (["--model", "convnext_tinny"], r"^--model: unknown model 'convnext_tinny'; did you mean 'convnext_tiny'"),
])
def test_what_cannot_work_is_refused_naming_the_flag(base, empty_torch_home, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(base + extra)


def test_weights_without_pretrained_is_refused_for_torchvision_names(base, mobilenet_file):
    with pytest.raises(ConfigError, match=r"^--weights: goes with ImageNet weights: add --pretrained"):
        parse_config(base + ["--model", "mobilenet_v3_small", "--weights", str(mobilenet_file)])


def test_ours_take_pretrained_as_their_pretrained_twins(base, empty_torch_home):
    with pytest.raises(ConfigError, match=r"^--pretrained: resnet50 needs the ImageNet weights .*"
                                          r"resnet50-11ad3fa6\.pth"):
        parse_config(base + ["--model", "resnet50", "--pretrained"])


def test_resume_keeps_pretrained(shards_dir, mobilenet_file, tmp_path):
    run = tmp_path / "saved_run"
    run.mkdir()
    argv = ["--shards", str(shards_dir), "--out", str(run)]
    settings = parse_config(argv + ["--model", "mobilenet_v3_small", "--pretrained"])
    (run / "config.yaml").write_text(run_config_text(as_dict(settings), world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    assert parse_config(argv + ["--resume"]).pretrained
    with pytest.raises(ConfigError, match=r"^--pretrained: False differs from True"):
        parse_config(argv + ["--resume", "--no-pretrained"])
