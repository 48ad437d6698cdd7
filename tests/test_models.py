"""The model registry and every registered network: builds, trains a step, exact report architectures."""

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import AlexNet_Weights, ResNet18_Weights, ResNet50_Weights

from models import PretrainedWeightsMissing, create_model, describe, list_models, register_model
from models.__main__ import main as describe_main
from models.weights import cached_weights_path
from models.input_sizes import input_size_problem
from models.registry import meta_architecture
from shards.classes import VOC

NUM_LOGITS = VOC.num_logits  # the report's head: 20 classes + __background__

# Networks whose flatten size pins the input to 227 px; every other one is tested at 96 px
# (global pooling), which keeps the resnet50 forward/backward cheap on a 2-core CPU.
FIXED_227 = {"simple", "basenet_nofc", "basenet_nofc_bn", "final"}


def input_size(name: str) -> int:
    return 227 if name in FIXED_227 else 96


# Ours train a real step here; the torchvision-named ones (tests/test_models_torchvision.py) are
# checked on the meta device, as a real step of each would take minutes.
@pytest.mark.parametrize("name", list_models("ours"))
def test_every_model_trains_a_step_in_channels_last(name: str, imagenet_torch_home, monkeypatch) -> None:
    """What the trainer does with any --model: forward, loss, backward, with channels_last memory."""
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))  # the *_pretrained ones read this cache
    torch.manual_seed(0)
    model = create_model(name)
    size = input_size(name)
    images = torch.randn(2, 3, size, size)
    targets = torch.zeros(2, NUM_LOGITS)
    targets[0, 3] = targets[1, 15] = 1.0

    model.eval()
    reference = model(images)
    assert reference.shape == (2, NUM_LOGITS)
    assert torch.isfinite(reference).all()

    model = model.to(memory_format=torch.channels_last)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(images_cl), reference, rtol=1e-3, atol=1e-4)

    model.train()
    logits = model(images_cl)
    assert logits.shape == (2, NUM_LOGITS) and torch.isfinite(logits).all()
    nn.MultiLabelSoftMarginLoss()(logits, targets).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {param_name}"
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())


@pytest.mark.parametrize("name", list_models("ours"))
def test_every_model_takes_its_head_width_from_the_data(name: str) -> None:
    """A data set of 7 classes gets a 7-logit head; the pre-launch size check asks for that width."""
    model = meta_architecture(name, num_logits=7).eval()
    meta_images = torch.empty(1, 3, input_size(name), input_size(name), device="meta")
    assert model(meta_images).shape == (1, 7)
    assert input_size_problem(name, input_size(name), num_logits=7) is None
    assert meta_architecture(name).eval()(meta_images).shape == (1, NUM_LOGITS)  # default: the report's head


def trace_children(sequential: nn.Sequential, x: torch.Tensor) -> list[tuple[type, tuple[int, ...]]]:
    """(layer type, output shape without batch) for each child, run one after another."""
    rows = []
    for layer in sequential:
        x = layer(x)
        rows.append((type(layer), tuple(x.shape[1:])))
    return rows


def conv_specs(sequential: nn.Sequential) -> list[tuple[int, int, int, int, int]]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in sequential if isinstance(m, nn.Conv2d)
    ]


def linear_specs(sequential: nn.Sequential) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in sequential if isinstance(m, nn.Linear)]


BASENET_FEATURES = [
    (nn.Conv2d, (64, 223, 223)), (nn.ReLU, (64, 223, 223)), (nn.MaxPool2d, (64, 111, 111)),
    (nn.Conv2d, (32, 109, 109)), (nn.ReLU, (32, 109, 109)), (nn.MaxPool2d, (32, 54, 54)),
    (nn.Conv2d, (16, 52, 52)), (nn.ReLU, (16, 52, 52)), (nn.MaxPool2d, (16, 26, 26)),
]
BASENET_CONVS = [(3, 64, 5, 1, 0), (64, 32, 3, 1, 0), (32, 16, 3, 1, 0)]


def test_simple_is_the_reports_simple_classifier() -> None:
    model = create_model("simple")
    assert trace_children(model.features, torch.zeros(1, 3, 227, 227)) == BASENET_FEATURES
    assert conv_specs(model.features) == BASENET_CONVS
    assert linear_specs(model.classifier) == [(16 * 26 * 26, 120), (120, 84), (84, 21)]
    assert sum(isinstance(m, nn.ReLU) for m in model.classifier) == 2


def test_basenet_nofc_drops_the_hidden_fc_layers() -> None:
    model = create_model("basenet_nofc")
    assert trace_children(model.features, torch.zeros(1, 3, 227, 227)) == BASENET_FEATURES
    assert conv_specs(model.features) == BASENET_CONVS
    assert linear_specs(model.classifier) == [(16 * 26 * 26, 21)]
    assert not any(isinstance(m, nn.ReLU) for m in model.classifier)


def test_basenet_nofc_bn_adds_batchnorm_after_each_conv() -> None:
    model = create_model("basenet_nofc_bn")
    expected = []
    for layer_type, shape in BASENET_FEATURES:
        expected.append((layer_type, shape))
        if layer_type is nn.Conv2d:
            expected.append((nn.BatchNorm2d, shape))
    assert trace_children(model.features, torch.zeros(1, 3, 227, 227)) == expected
    assert conv_specs(model.features) == BASENET_CONVS
    assert linear_specs(model.classifier) == [(16 * 26 * 26, 21)]


def bn_relu(channels: int, side: int) -> list[tuple[type, tuple[int, ...]]]:
    return [(nn.BatchNorm2d, (channels, side, side)), (nn.ReLU, (channels, side, side))]


def test_final_is_the_reports_table_layer_for_layer() -> None:
    model = create_model("final").eval()
    expected = [
        (nn.Conv2d, (64, 113, 113)), *bn_relu(64, 113),
        (nn.Conv2d, (128, 56, 56)), *bn_relu(128, 56),
        (nn.Conv2d, (256, 27, 27)), (nn.MaxPool2d, (256, 13, 13)), *bn_relu(256, 13),
        (nn.Conv2d, (512, 6, 6)), *bn_relu(512, 6),
        (nn.Conv2d, (512, 2, 2)), *bn_relu(512, 2),
    ]
    assert trace_children(model.features, torch.zeros(1, 3, 227, 227)) == expected
    channels = [3, 64, 128, 256, 512, 512]
    assert conv_specs(model.features) == [(i, o, 3, 2, 0) for i, o in zip(channels, channels[1:])]
    assert linear_specs(model.classifier) == [(2048, 21)]


@pytest.mark.parametrize("name", sorted(FIXED_227))
def test_fixed_size_models_explain_a_wrong_input_size(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}.*227x227"):
        create_model(name).eval()(torch.zeros(1, 3, 128, 128))


def test_alexnet_is_torchvisions_with_a_21_way_last_layer() -> None:
    ours, theirs = create_model("alexnet"), torchvision.models.alexnet()
    head = ours.classifier[-1]
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (4096, 21)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith("classifier.6.")}
    theirs_shapes = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("classifier.6.")}
    assert ours_shapes == theirs_shapes
    assert str(ours.features) == str(theirs.features)


def test_vocnet_takes_any_input_size_and_its_options() -> None:
    model = create_model("vocnet").eval()
    for size in (96, 161, 227):
        assert model(torch.zeros(1, 3, size, size)).shape == (1, NUM_LOGITS)
    slim = create_model("vocnet", width=16, dropout=0.5)
    assert slim.head[-1].in_features == 8 * 16
    assert slim.head[-2].p == 0.5
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


def test_registry_names_the_contract_models() -> None:
    expected = {"simple", "alexnet", "alexnet_pretrained", "basenet_nofc", "basenet_nofc_bn", "final",
                "resnet18", "resnet18_pretrained", "resnet50", "resnet50_pretrained", "vocnet"}
    assert set(list_models("ours")) == expected
    assert set(list_models()) == expected | set(list_models("torchvision"))


def test_unknown_name_lists_the_known_ones_and_the_closest() -> None:
    with pytest.raises(ValueError) as err:
        create_model("resnet19")
    message = str(err.value)
    assert "'resnet19'" in message and "did you mean 'resnet18'" in message
    assert all(name in message for name in list_models())


def test_an_option_the_builder_does_not_take_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'simple'.*'dropout'"):
        create_model("simple", dropout=0.1)
    with pytest.raises(ValueError, match="'vocnet'.*'weights'"):
        create_model("vocnet", weights="x.pth")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'final' is already registered"):
        register_model("final")(lambda: nn.Identity())
    assert type(create_model("final")).__name__ == "FinalNet"  # the first registration still stands


def test_describe_shows_the_reports_table_with_totals(capsys) -> None:
    model = create_model("final")
    model.train()
    running_mean = model.features[1].running_mean.clone()
    table = describe(model)
    lines = table.splitlines()
    assert "Conv2d" in lines[2] and "64 x 113 x 113" in lines[2] and "1,792" in lines[2]
    assert any("MaxPool2d" in line and "256 x 13 x 13" in line for line in lines)
    assert any("Linear" in line and line.split()[-1] == "43,029" for line in lines)
    total = sum(p.numel() for p in model.parameters())
    assert f"total params: {total:,}" in table
    # The dummy pass leaves the model as it was: training mode, BatchNorm statistics untouched.
    assert model.training and torch.equal(model.features[1].running_mean, running_mean)

    assert "32 x 64 x 64" in describe("vocnet", image_size=128)  # stem output at half resolution
    describe_main(["basenet_nofc", "--image-size", "227"])
    assert "16 x 26 x 26" in capsys.readouterr().out


# --- ImageNet weights from a local torch hub cache -------------------------------------------
# Stand-ins for the real files: randomly initialized torchvision models (1000-way heads), saved
# as plain state dicts under torchvision's file names, exactly as a downloaded cache holds them.
PRETRAINED = {
    "alexnet_pretrained": (torchvision.models.alexnet, AlexNet_Weights.IMAGENET1K_V1, "classifier.6."),
    "resnet18_pretrained": (torchvision.models.resnet18, ResNet18_Weights.IMAGENET1K_V1, "fc."),
    "resnet50_pretrained": (torchvision.models.resnet50, ResNet50_Weights.IMAGENET1K_V2, "fc."),
}


@pytest.fixture(scope="module")
def imagenet_states() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    return {name: build().state_dict() for name, (build, _, _) in PRETRAINED.items()}


@pytest.fixture(scope="module")
def imagenet_torch_home(tmp_path_factory, imagenet_states) -> Path:
    """A $TORCH_HOME whose hub/checkpoints holds a file for every *_pretrained model."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        for name, (_, weights_enum, _) in PRETRAINED.items():
            path = cached_weights_path(weights_enum)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(imagenet_states[name], path)
    return home


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained_loads_features_and_gets_a_new_head(name, imagenet_torch_home, imagenet_states, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))
    head = PRETRAINED[name][2]
    saved, loaded = imagenet_states[name], create_model(name).state_dict()
    for key, tensor in saved.items():
        if not key.startswith(head):
            assert torch.equal(loaded[key], tensor), f"{name}: {key} not loaded from the cache"
    new_weight = loaded[head + "weight"]
    assert new_weight.shape[0] == NUM_LOGITS and saved[head + "weight"].shape[0] == 1000
    assert not torch.equal(new_weight, saved[head + "weight"][:NUM_LOGITS])


def test_weights_path_wins_over_the_cache(tmp_path, imagenet_torch_home, imagenet_states, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))
    torch.manual_seed(2)
    own = torchvision.models.resnet18().state_dict()
    torch.save(own, tmp_path / "my-resnet18.pth")
    loaded = create_model("resnet18_pretrained", weights=str(tmp_path / "my-resnet18.pth")).state_dict()
    assert torch.equal(loaded["conv1.weight"], own["conv1.weight"])
    assert not torch.equal(loaded["conv1.weight"], imagenet_states["resnet18_pretrained"]["conv1.weight"])


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_missing_weights_say_where_to_put_them(name, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    weights_enum = PRETRAINED[name][1]
    with pytest.raises(PretrainedWeightsMissing) as err:
        create_model(name)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    expected = tmp_path / "empty" / "hub" / "checkpoints" / Path(weights_enum.url).name
    assert str(expected) in message and weights_enum.url in message and "weights=" in message


def test_missing_weights_path_names_the_path(tmp_path) -> None:
    with pytest.raises(PretrainedWeightsMissing, match="no-such.pth"):
        create_model("alexnet_pretrained", weights=tmp_path / "no-such.pth")


def test_weights_of_another_architecture_are_refused(imagenet_torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))
    resnet50_file = cached_weights_path(PRETRAINED["resnet50_pretrained"][1])
    with pytest.raises(ValueError, match="resnet18_pretrained.*resnet50-"):
        create_model("resnet18_pretrained", weights=resnet50_file)


def test_an_unreadable_weights_file_is_named(tmp_path) -> None:
    broken = tmp_path / "alexnet-owt-7be5be79.pth"
    broken.write_bytes(b"<html>403 Forbidden</html>")  # what a failed download often leaves behind
    with pytest.raises(ValueError, match="cannot read weights file .*alexnet-owt-7be5be79.pth"):
        create_model("alexnet_pretrained", weights=broken)


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_freeze_features_trains_only_the_head(name, imagenet_torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))
    head = PRETRAINED[name][2]
    model = create_model(name, freeze_features=True)
    trainable = {key for key, param in model.named_parameters() if param.requires_grad}
    assert trainable == {head + "weight", head + "bias"}
    model(torch.randn(2, 3, 96, 96)).sum().backward()
    assert all((param.grad is not None) == param.requires_grad for param in model.parameters())
