"""torchvision's classification models by name: registry, heads, ImageNet weights from local files, sizes, listing.

Every torchvision model is checked on the meta device only (shapes, no memory); real forwards and
stand-in weight files are kept to a few small networks.
"""

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import AlexNet_Weights, ResNet18_Weights, ResNet50_Weights, get_model

from models import PretrainedWeightsMissing, create_model, list_models, meta_architecture
from models.__main__ import main as describe_main
from models.catalog import catalog, catalog_names, parameter_count
from models.input_sizes import SEARCH, input_size_problem, smallest_input_size
from models.torchvision_zoo import AUX_HEADS, classifier_name, default_weights, find_imagenet_file, imagenet_file
from models.weights import cached_weights_path
from shards.classes import VOC

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
OURS_TOO = {"alexnet", "resnet18", "resnet50"}  # torchvision names that were ours first


def test_every_torchvision_name_is_registered_and_ours_win() -> None:
    assert set(list_models("torchvision")) == set(TORCHVISION) - OURS_TOO
    assert OURS_TOO <= set(list_models("ours"))
    torch.manual_seed(0)
    ours = create_model("resnet18").state_dict()
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=VOC.num_logits).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # same init, same RNG


@pytest.mark.parametrize("name", list_models("torchvision"))
def test_every_torchvision_model_builds_at_its_smallest_size_with_the_datas_logits(name: str) -> None:
    # The smallest size torchvision's weights declare (ViT: the only one), within what the trainer allows.
    size = max(SEARCH.start, default_weights(name).meta["min_size"][0])
    model = meta_architecture(name, num_logits=7).eval()
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert model(torch.empty(1, 3, size, size, device="meta")).shape == (1, 7)


CLASSIFIERS = {"resnet101": "fc", "squeezenet1_1": "classifier.1", "vit_b_16": "heads.head", "swin_t": "head",
               "mobilenet_v3_small": "classifier.3", "efficientnet_v2_s": "classifier.1", "densenet121": "classifier",
               "convnext_tiny": "classifier.2", "googlenet": "fc", "regnet_y_400mf": "fc", "maxvit_t": "classifier.5",
               "vgg11": "classifier.6", "shufflenet_v2_x0_5": "fc", "mnasnet0_5": "classifier.1", "inception_v3": "fc",
               "swin_v2_t": "head"}  # one of each torchvision family


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_the_classifier_is_found_whatever_it_is_called(name: str) -> None:
    assert classifier_name(name) == CLASSIFIERS[name]
    head = meta_architecture(name, num_logits=7).get_submodule(CLASSIFIERS[name])
    assert isinstance(head, (nn.Linear, nn.Conv2d))  # squeezenet's classifier is a 1x1 convolution
    assert head.weight.shape[0] == 7


# --- ImageNet weights: stand-in files under torchvision's own names ------------------------------
# Randomly initialized torchvision networks with their 1000-way ImageNet heads (and googlenet's
# auxiliary heads, as its real file has them), saved where the hub cache keeps the real files.
STAND_INS = {"mobilenet_v3_small": {}, "squeezenet1_1": {}, "googlenet": {"aux_logits": True, "init_weights": True},
             "resnet18": {}, "mnasnet0_5": {}}


@pytest.fixture(scope="module")
def imagenet_states() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    return {name: get_model(name, weights=None, **options).state_dict() for name, options in STAND_INS.items()}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory, imagenet_states) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        for name, state in imagenet_states.items():
            Path(imagenet_file(name)).parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, imagenet_file(name))
    return home


def test_the_cache_file_is_torchvisions_own_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_file("convnext_tiny") == str(tmp_path / "hub" / "checkpoints" / "convnext_tiny-983f1562.pth")
    assert imagenet_file("vit_h_14").endswith("/vit_h_14_swag-80465313.pth")  # DEFAULT: SWAG at 518 px
    # Ours read torchvision's DEFAULT files: --model resnet50 --pretrained is resnet50_pretrained.
    for name, weights in (("alexnet", AlexNet_Weights.IMAGENET1K_V1), ("resnet18", ResNet18_Weights.IMAGENET1K_V1),
                          ("resnet50", ResNet50_Weights.IMAGENET1K_V2)):
        assert imagenet_file(name) == str(cached_weights_path(weights))


# mnasnet: torchvision's MNASNet refuses a state dict without its saved module versions.
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "googlenet", "mnasnet0_5"])
def test_pretrained_loads_every_imagenet_tensor_but_the_classifier(name, torch_home, imagenet_states,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    head = classifier_name(name) + "."
    saved, loaded = imagenet_states[name], create_model(name, pretrained=True).state_dict()
    features = [key for key in saved if not key.startswith((head, *AUX_HEADS.get(name, ())))]
    assert set(loaded) == set(features) | {head + "weight", head + "bias"}  # no auxiliary heads
    assert all(torch.equal(loaded[key], saved[key]) for key in features)
    assert loaded[head + "weight"].shape[0] == VOC.num_logits and saved[head + "weight"].shape[0] == 1000


def test_densenet_files_with_torchvisions_old_layer_names_load(tmp_path) -> None:
    torch.manual_seed(3)
    current = get_model("densenet121", weights=None).state_dict()
    # As the ImageNet file has them: "norm1.weight" -> "norm.1.weight", no num_batches_tracked (older than it).
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key): value
           for key, value in current.items() if not key.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "densenet121-a639ec97.pth")
    loaded = create_model("densenet121", pretrained=True, weights=tmp_path / "densenet121-a639ec97.pth").state_dict()
    assert all(torch.equal(loaded[key], current[key]) for key in current if not key.startswith("classifier."))


def test_a_pretrained_googlenet_emits_logits_in_training_mode(torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    model = create_model("googlenet", pretrained=True, freeze_features=True).train()
    logits = model(torch.randn(2, 3, 64, 64))  # a tensor, not torchvision's (logits, aux2, aux1) tuple
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, VOC.num_logits)
    logits.sum().backward()
    assert {key for key, param in model.named_parameters() if param.requires_grad} == {"fc.weight", "fc.bias"}
    assert all((param.grad is not None) == param.requires_grad for param in model.parameters())


def test_weights_path_wins_over_the_cache(torch_home, imagenet_states, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.manual_seed(2)
    torch.save(get_model("squeezenet1_1", weights=None).state_dict(), tmp_path / "mine.pth")
    own = torch.load(tmp_path / "mine.pth", weights_only=True)
    loaded = create_model("squeezenet1_1", pretrained=True, weights=tmp_path / "mine.pth").state_dict()
    assert torch.equal(loaded["features.0.weight"], own["features.0.weight"])
    assert not torch.equal(loaded["features.0.weight"], imagenet_states["squeezenet1_1"]["features.0.weight"])


def test_ours_with_pretrained_are_their_pretrained_twins(torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    twin, ours = create_model("resnet18_pretrained").state_dict(), create_model("resnet18", pretrained=True).state_dict()
    assert all(torch.equal(ours[key], twin[key]) for key in ours if not key.startswith("fc."))


def test_a_missing_file_says_where_to_put_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    with pytest.raises(PretrainedWeightsMissing) as err:
        create_model("mobilenet_v3_small", pretrained=True)
    assert str(expected) in str(err.value) and default_weights("mobilenet_v3_small").url in str(err.value)
    with pytest.raises(PretrainedWeightsMissing, match=re.escape(str(expected))):
        find_imagenet_file("mobilenet_v3_small")


def test_weights_and_freezing_need_pretrained() -> None:
    with pytest.raises(ValueError, match="mobilenet_v3_small: weights= applies to ImageNet weights only"):
        create_model("mobilenet_v3_small", weights="x.pth")
    with pytest.raises(ValueError, match="resnet50: freeze_features applies to ImageNet weights only"):
        create_model("resnet50", freeze_features=True)


# --- input sizes and the listing ---------------------------------------------------------------

def test_input_sizes_of_transformers_and_convnets() -> None:
    assert input_size_problem("vit_b_16", 448) == "model 'vit_b_16' cannot take 448x448 images; it takes 224 only"
    assert input_size_problem("vit_b_16", 224) is None
    assert input_size_problem("swin_t", 448) is None and input_size_problem("convnext_tiny", 96) is None
    assert "takes 518 only" in input_size_problem("vit_h_14", 224)
    assert smallest_input_size("inception_v3") == 75  # found by bisection, as torchvision documents


def test_the_listing_puts_ours_first_and_counts_real_parameters() -> None:
    names = catalog_names()
    ours = list_models("ours")
    assert names[:len(ours)] == ours and sorted(names) == list_models()
    real = get_model("mobilenet_v3_small", weights=None, num_classes=VOC.num_logits)
    assert parameter_count("mobilenet_v3_small") == sum(p.numel() for p in real.parameters())
    lines = catalog(["final", "mobilenet_v3_small"]).splitlines()
    assert lines[1].split() == ["final", "ours", f"{sum(p.numel() for p in create_model('final').parameters()):,}"]
    assert lines[2].split() == ["mobilenet_v3_small", "torchvision", f"{parameter_count('mobilenet_v3_small'):,}"]
    assert lines[-2].startswith("2 models;") and lines[-1].startswith("timm/NAME: ")


def test_python_m_models_names_the_closest_model_on_a_typo(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        describe_main(["convnext_tinny"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: unknown model 'convnext_tinny'; did you mean 'convnext_tiny'?")
