"""Parameter groups (head lr, no decay on norms and biases), the step schedule and gradient clipping
in the real training step (fast, in-process, no data)."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from models import create_model, list_models
from models.logits import logit_layer
from models.registry import meta_architecture
from shards.classes import VOC
from trainer.loop.step import train_step
from trainer.recipe.loss import build_loss
from trainer.recipe.optim import build_optimizer, build_scheduler


def groups_by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    """parameter name -> (lr, weight decay) of the group it landed in."""
    where = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {name: where[id(p)] for name, p in model.named_parameters() if id(p) in where}


def test_defaults_build_the_one_group_the_trainer_always_built():
    model = create_model("vocnet", num_logits=21)
    optimizer = build_optimizer(model, "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, num_logits=21)
    assert len(optimizer.param_groups) == 1
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in model.parameters()]
    assert optimizer.state_dict()["param_groups"] == torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4).state_dict()["param_groups"]


@pytest.mark.parametrize("model_name, head_names", [
    ("vocnet", {"head.5.weight", "head.5.bias"}),
    ("alexnet", {"classifier.6.weight", "classifier.6.bias"}),
    ("final", {"classifier.1.weight", "classifier.1.bias"}),
])
def test_head_lr_scale_gives_only_the_logit_layer_k_times_the_lr(model_name, head_names):
    model = create_model(model_name, num_logits=21)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, momentum=0.0, weight_decay=0.01, head_lr_scale=10,
                                num_logits=21)
    lrs = groups_by_name(model, optimizer)
    assert {name for name, (lr, _) in lrs.items() if lr == pytest.approx(1e-2)} == head_names
    assert all(lr == 1e-3 for name, (lr, _) in lrs.items() if name not in head_names)
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the body's lr: the one history.csv logs
    assert len(lrs) == len(list(model.parameters()))


@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_has_a_logit_layer(name):
    layer = logit_layer(meta_architecture(name, 7), 7)
    assert getattr(layer, "out_features", None) == 7 or layer.out_channels == 7  # SqueezeNet: a 1x1 convolution


def test_head_of_a_model_with_two_logit_sized_linears_is_the_last_one():
    model = torch.nn.Sequential(torch.nn.Linear(4, 21), torch.nn.ReLU(), torch.nn.Linear(21, 21))
    assert logit_layer(model, 21) is model[2]
    with pytest.raises(ValueError, match=r"no nn.Linear \(or 1x1 nn.Conv2d\) with 5 outputs"):
        logit_layer(model, 5)


def test_no_decay_on_norm_and_bias_parameters():
    model = create_model("basenet_nofc_bn", num_logits=21)
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, no_decay_norm_bias=True)
    decay = {name: wd for name, (_, wd) in groups_by_name(model, optimizer).items()}
    norms = {name for module_name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)
             for name in (f"{module_name}.weight", f"{module_name}.bias")}
    assert norms and all(decay[name] == 0.0 for name in norms)
    assert all(decay[name] == 0.0 for name in decay if name.endswith(".bias"))
    decayed = {name for name, wd in decay.items() if wd == 1e-4}
    conv_and_linear = {name for module_name, module in model.named_modules()
                       if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) for name in [f"{module_name}.weight"]}
    assert decayed == conv_and_linear
    # Both at once: four groups, the head's two at 10x.
    both = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, no_decay_norm_bias=True,
                           head_lr_scale=10, num_logits=21)
    assert [(round(g["lr"], 9), g["weight_decay"], len(g["params"])) for g in both.param_groups] == [
        (0.1, 1e-4, len(conv_and_linear) - 1), (0.1, 0.0, len(decay) - len(conv_and_linear) - 1),
        (1.0, 1e-4, 1), (1.0, 0.0, 1)]


def test_step_schedule_multiplies_every_group_by_gamma_at_each_step_after_warmup():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4))
    optimizer = build_optimizer(model, "sgd", lr=1.0, momentum=0.0, weight_decay=0.0, head_lr_scale=10, num_logits=4)
    scheduler = build_scheduler(optimizer, "step", total_updates=10, warmup_updates=2, step_updates=(4, 7), gamma=0.5)
    body, head = [], []
    for _ in range(10):
        body.append(optimizer.param_groups[0]["lr"])
        head.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    assert body == pytest.approx([0.5, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])
    assert head == pytest.approx([10 * lr for lr in body])


@pytest.fixture
def accelerator():
    """A CPU Accelerator accumulating 2 micro-batches; Accelerate's singleton state is reset around it."""
    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True, gradient_accumulation_steps=2, step_scheduler_with_optimizer=False)
    AcceleratorState._reset_state(True)


class Scaled(torch.nn.Module):
    """The bce StatesLoss times a huge factor: an exploding gradient."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = build_loss("bce", VOC), factor

    def forward(self, logits: torch.Tensor, states: torch.Tensor, mixed=None) -> torch.Tensor:
        return self.inner(logits, states, mixed) * self.factor


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_clip_grad_norm_bounds_the_applied_update_once_the_window_closes(accelerator, clip):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 21))
    optimizer = build_optimizer(model, "sgd", lr=1.0, momentum=0.0, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "none", total_updates=1, warmup_updates=0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    states = torch.randint(-1, 2, (2, 20), dtype=torch.int8)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    steps = dict(optimizer=optimizer, scheduler=scheduler, loss_fn=Scaled(1e6), accelerator=accelerator,
                 clip_grad_norm=clip)
    train_step(model, images, states, **steps)  # inside the window: no update yet
    assert torch.equal(torch.cat([p.detach().flatten() for p in model.parameters()]), start)
    train_step(model, images, states, **steps)
    update = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    if clip:
        assert update.norm().item() == pytest.approx(clip, rel=1e-4)  # SGD at lr 1: the update is the gradient
    else:
        assert update.norm().item() > 1e4
