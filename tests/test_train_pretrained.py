"""A torchvision-named model trained from ImageNet weights under real 2-process DDP, then evaluated by a
run's tool on a machine without the ImageNet file. One launch: mobilenet_v3_small at 32 px, 1 epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torchvision.models import get_model

from cli_in_process import run_module
from models.torchvision_zoo import classifier_name, imagenet_file
from train_helpers import TINY, ddp, run
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.rundir.layout import WEIGHTS_FILE

pytestmark = pytest.mark.slow
MODEL = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def pretrained_run(shards_dir, tmp_path_factory):
    """(run directory, the stand-in ImageNet state) of a --pretrained --freeze-features run."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))  # the launched processes inherit it
        torch.manual_seed(1)
        state = get_model(MODEL, weights=None).state_dict()
        Path(imagenet_file(MODEL)).parent.mkdir(parents=True)
        torch.save(state, imagenet_file(MODEL))
        out = tmp_path_factory.mktemp("pretrained") / "run"
        run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "1", *TINY,
                 "--model", MODEL, "--pretrained", "--freeze-features"]))
    return out, state


def test_the_run_trains_only_the_new_head_on_the_imagenet_features(pretrained_run):
    out, imagenet = pretrained_run
    settings = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert (settings["model"], settings["pretrained"], settings["freeze_features"]) == (MODEL, True, True)
    checkpoint, _ = latest_checkpoint(out, epoch_end=True)
    trained = load_file(str(checkpoint / WEIGHTS_FILE))
    head = classifier_name(MODEL) + "."
    convs = [key for key, value in imagenet.items() if key.endswith(".weight") and value.dim() == 4]
    assert convs and all(torch.equal(trained[key], imagenet[key]) for key in convs)  # frozen features
    assert trained[head + "weight"].shape[0] == 21


def test_a_runs_tools_rebuild_it_without_the_imagenet_file(pretrained_run, tmp_path, monkeypatch, capsys):
    out, _ = pretrained_run
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    code, stdout, stderr = run_module("trainer.evaluate_run", ["--run", out, "--weights", "final", "--cpu",
                                                                "--out", tmp_path / "eval"], capsys)
    assert code == 0, stdout + stderr
    block = json.loads((tmp_path / "eval" / "summary.json").read_text())
    final = json.loads((out / "summary.json").read_text())["final_model"]
    assert block["map"] == pytest.approx(final["test_map"], abs=1e-6)
    assert block["loss"] == pytest.approx(final["test_loss"], rel=1e-4)
