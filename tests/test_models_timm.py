"""timm/NAME backbones (models/timm_zoo.py): resolved on first use, the data's logits, ImageNet weights from
a local file only, refused before launch in one line; one real 2-process run from a weights file whose
run a run's tool rebuilds without that file (slow). timm is in the test extras; without it these skip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from cli_in_process import run_module
from models import PretrainedWeightsMissing, create_model, list_models
from models.catalog import catalog
from models.logits import logit_layer
from models.timm_zoo import classifier_names
from shards.classes import VOC
from train_helpers import TINY, ddp, run
from trainer.config import ConfigError, parse_config
from trainer.recipe.network import build_model
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.rundir.layout import WEIGHTS_FILE
from trainer.tools.run_model import architecture

timm = pytest.importorskip("timm")
SMALL = "mobilenetv3_small_050"  # 0.6 M parameters, takes 32 px: the cheapest real timm network to train


def imagenet_state(arch: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A stand-in for timm's ImageNet file of `arch`: its own 1000-class network, seeded."""
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False).state_dict()


@pytest.fixture
def small_file(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = imagenet_state(SMALL)
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path, state


def test_a_timm_name_is_registered_on_first_use_with_the_datas_logits():
    model = create_model("timm/resnet18", num_logits=13)
    assert "timm/resnet18" in list_models("timm") and "timm/resnet18" not in list_models("torchvision")
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 13)
    assert logit_layer(model, 13) is model.fc  # --head-lr-scale finds timm's classifier too


def test_typos_name_the_closest_timm_networks_and_the_listing_gives_timm_one_line():
    with pytest.raises(ValueError, match=r"timm .* has no architecture 'resnt18'; did you mean timm/resnet18"):
        create_model("timm/resnt18")
    with pytest.raises(ValueError, match=r"and timm/NAME for timm's networks"):
        create_model("convnext_tny")
    last = catalog(["vocnet"]).splitlines()[-1]
    assert last.startswith("timm/NAME: any of timm ") and f"{len(timm.list_models()):,} networks" in last


def test_without_timm_a_timm_name_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError, as on a machine without it
    with pytest.raises(ValueError, match=r"need the timm package, which is not installed: pip install timm"):
        create_model("timm/resnet10t")
    assert catalog(["vocnet"]).splitlines()[-1].endswith("(pip install timm)")


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_pretrained_loads_every_tensor_of_the_file_but_the_classifier(suffix, tmp_path):
    state = imagenet_state(SMALL)
    path = tmp_path / f"weights.{suffix}"
    if suffix == "pth":
        torch.save(state, path)
    else:
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    model = create_model(f"timm/{SMALL}", num_logits=7, pretrained=True, weights=path, freeze_features=True)
    head = classifier_names(model)[0] + "."
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if not key.startswith(head))
    assert loaded[head + "weight"].shape[0] == 7 and model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    assert {key for key, p in model.named_parameters() if p.requires_grad} == {head + "weight", head + "bias"}
    # The from-scratch twin (a run's tools build it) has the same tensors, so a run's weights fit it.
    assert set(create_model(f"timm/{SMALL}", num_logits=7).state_dict()) == set(loaded)


def test_another_networks_file_or_no_file_is_refused_naming_what_to_get(tmp_path):
    other = tmp_path / "resnet34.pth"
    torch.save(imagenet_state("resnet34"), other)
    with pytest.raises(ValueError, match=rf"timm/resnet18: {other} does not hold weights of resnet18"):
        create_model("timm/resnet18", pretrained=True, weights=other)
    with pytest.raises(PretrainedWeightsMissing, match=r"pass --weights PATH, a copy of model.safetensors of "
                                                       r"https://huggingface.co/timm/resnet18\."):
        create_model("timm/resnet18", pretrained=True)
    with pytest.raises(PretrainedWeightsMissing, match=r"weights file .*missing.pth .* does not exist"):
        create_model("timm/resnet18", pretrained=True, weights=tmp_path / "missing.pth")


def test_the_trainer_refuses_before_launch_in_one_line(shards_dir, tmp_path, capsys):
    base = ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]
    code, out, err = run_module("trainer.config", base + ["--model", "timm/resnet18", "--pretrained"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --pretrained: timm/resnet18: timm models read ImageNet weights from a local file")
    code, _, err = run_module("trainer.config", base + ["--model", "timm/vit_tiny_patch16_224", "--image-size", "112"],
                              capsys)
    assert code == 2 and "cannot take 112x112 images; it takes 224 only" in err
    code, _, err = run_module("trainer.config", base + ["--model", "timm/nosuchnet"], capsys)
    assert code == 2 and "timm" in err and "has no architecture 'nosuchnet'" in err


def test_the_trainer_builds_it_from_weights_and_a_runs_tools_without(shards_dir, tmp_path, small_file):
    path, state = small_file
    cfg = parse_config(["--shards", str(shards_dir), "--out", str(tmp_path / "run"), "--model", f"timm/{SMALL}",
                        "--pretrained", "--weights", str(path), "--image-size", "32"])
    model = build_model(cfg, VOC)
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    rebuilt = architecture(cfg)
    assert (rebuilt.model, rebuilt.pretrained, rebuilt.weights) == (f"timm/{SMALL}", False, None)
    with pytest.raises(ConfigError, match="--weights"):
        parse_config(["--shards", str(shards_dir), "--out", str(tmp_path / "r2"), "--model", f"timm/{SMALL}",
                      "--weights", str(path)])


@pytest.mark.slow
def test_two_processes_fine_tune_a_timm_network_and_evaluate_run_rebuilds_it(shards_dir, tmp_path, small_file,
                                                                               capsys):
    path, state = small_file
    out = tmp_path / "run"
    run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "1", *TINY, "--model", f"timm/{SMALL}",
             "--pretrained", "--weights", str(path), "--head-lr-scale", "10"]))
    settings = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert (settings["model"], settings["weights"], settings["head_lr_scale"]) == (f"timm/{SMALL}", str(path), 10.0)
    checkpoint, _ = latest_checkpoint(out, epoch_end=True)
    trained = load_file(str(checkpoint / WEIGHTS_FILE))
    assert trained["classifier.weight"].shape[0] == VOC.num_logits
    assert not torch.equal(trained["conv_stem.weight"], state["conv_stem.weight"])  # the features were trained

    path.rename(tmp_path / "moved.safetensors")  # a run's tools need the run, not the ImageNet file
    code, stdout, stderr = run_module("trainer.evaluate_run", ["--run", out, "--weights", "final", "--cpu",
                                                                "--out", tmp_path / "eval"], capsys)
    assert code == 0, stdout + stderr
    block = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert block["map"] == pytest.approx(json.loads((out / "summary.json").read_text())["final_model"]["test_map"],
                                         abs=1e-6)
