"""A trained run's network with the weights one chooses, for trainer.predict and trainer.evaluate_run.

The run's settings come from RUN/config.yaml (model, image size, precision, loss, class list). Which
weights: `best` = RUN/best/model.safetensors (the best-val-mAP epoch); `final` = the
model.safetensors of the newest complete end-of-epoch checkpoint (the model the run tested
at its end, when it finished); or any checkpoint directory (RUN/checkpoints/epoch_0003, a
mid-epoch one, a copied best/). Default: best when the run has one, else final.

A `*_pretrained` model is built as its from-scratch twin (`resnet18_pretrained` -> `resnet18`):
the same torchvision network, so the run's weights replace every tensor and the ImageNet
file the run started from is not needed; a `--pretrained` run's network is built without it too.
The strict state-dict load checks that they fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from models import list_models
from shards.classes import ClassList
from shards.transforms import normalize
from trainer.evaluation.tta import forward_logits, probabilities
from trainer.rundir.checkpoint import latest_checkpoint
from trainer.rundir.layout import STATE_FILE, WEIGHTS_FILE, RunDir
from trainer.config.yaml_files import read_run_record, run_settings as recorded_settings
from trainer.rundir.provenance import run_classes
from trainer.recipe.network import build_model
from trainer.config import ConfigError, TrainConfig

PRETRAINED_SUFFIX = "_pretrained"
WEIGHT_CHOICES = "best, final or a checkpoint directory"


@dataclass(frozen=True)
class Weights:
    """Which weights were chosen: label (best / final / the directory's name), file, and in words."""

    label: str
    path: Path
    epoch: int | None  # the epoch they end (None when the directory does not say)
    described: str


@dataclass
class RunModel:
    """A run's network in eval mode on the accelerator's device, with the weights it was loaded with."""

    cfg: TrainConfig
    classes: ClassList  # what its logits score
    model: nn.Module
    weights: Weights


def run_settings(run_dir: str | Path) -> tuple[TrainConfig, ClassList]:
    """The settings and class list RUN/config.yaml records, or a ConfigError naming --run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"--run: no such directory {run}; give the --out of a training run")
    try:
        record = read_run_record(run)
        if not record:
            raise ConfigError(f"--run {run}: has no config.yaml, so it is not a training run's --out "
                              "(the model, image size and weights are read from there)")
        settings, _ = recorded_settings(record, run)
    except ConfigError as err:  # its messages name --resume, the trainer's only other reader of the file
        raise ConfigError(str(err).replace("--resume: ", "--run: ", 1)) from None
    return TrainConfig(**settings), run_classes(record)


def architecture(cfg: TrainConfig) -> TrainConfig:
    """The run's settings for building its network with no pretrained file (see the module doc)."""
    base = cfg.model.removesuffix(PRETRAINED_SUFFIX)
    model = base if base != cfg.model and base in list_models() else cfg.model
    return replace(cfg, model=model, pretrained=False, weights=None, freeze_features=False)


def _state(directory: Path) -> dict:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def choose_weights(run_dir: str | Path, choice: str | None, epochs: int) -> Weights:
    """Resolve --weights (None: best if the run has it, else final); ConfigError when they are not there."""
    run = Path(run_dir)
    best = RunDir(run).best
    if choice is None:
        choice = "best" if (best / WEIGHTS_FILE).is_file() else "final"
    if choice == "best":
        if not (best / WEIGHTS_FILE).is_file():
            raise ConfigError(f"--weights best: {best / WEIGHTS_FILE} does not exist (the run has not evaluated "
                              "val yet, or best/ was removed); use --weights final or a checkpoint directory")
        state = _state(best)
        val = f", val mAP {state['val_map']:.4f}" if isinstance(state.get("val_map"), float) else ""
        return Weights("best", best / WEIGHTS_FILE, state.get("epoch"),
                       f"best (epoch {state.get('epoch', '?')}{val}): {best / WEIGHTS_FILE}")
    if choice == "final":
        newest = latest_checkpoint(run, epoch_end=True)
        if newest is None:
            raise ConfigError(f"--weights final: {RunDir(run).checkpoints} holds no complete end-of-epoch checkpoint; "
                              "use --weights best or a checkpoint directory")
        directory, state = newest
        unfinished = "" if state.epoch >= epochs else f"; the run has not finished its {epochs} epochs"
        return Weights("final", directory / WEIGHTS_FILE, state.epoch,
                       f"final (epoch {state.epoch} of {epochs}{unfinished}): {directory / WEIGHTS_FILE}")
    directory = Path(choice)
    if not directory.is_dir():
        raise ConfigError(f"--weights {choice}: not {WEIGHT_CHOICES} (no such directory)")
    if not (directory / WEIGHTS_FILE).is_file():
        raise ConfigError(f"--weights {choice}: no {WEIGHTS_FILE} in it; give a checkpoint directory "
                          f"(RUN/checkpoints/epoch_NNNN) or RUN/best")
    state = _state(directory)
    epoch, into = state.get("epoch"), state.get("step_in_epoch", 0)
    where = "epoch ?" if epoch is None else f"epoch {epoch}" if not into else \
        f"epoch {epoch} + {into} batches of epoch {epoch + 1}"
    return Weights(directory.resolve().name, directory / WEIGHTS_FILE, epoch, f"{where}: {directory / WEIGHTS_FILE}")


def make_accelerator(cfg: TrainConfig, cpu: bool) -> tuple[Accelerator, str]:
    """One process on the GPU (or the CPU with cpu=True) with the run's autocast: (accelerator, note).

    The note is empty, or says why the run's precision is not used (fp16 needs a GPU)."""
    precision, note = cfg.mixed_precision, ""
    if precision == "fp16" and (cpu or not torch.cuda.is_available()):
        precision, note = "no", "the run used fp16, which needs a GPU: scoring in float32 on the CPU"
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision)
    if accelerator.num_processes != 1:
        raise ConfigError("this command runs in one process: start it with python, not accelerate launch")
    return accelerator, note


def load_run_model(cfg: TrainConfig, classes: ClassList, weights: Weights, accelerator: Accelerator) -> RunModel:
    """The run's network with `weights` loaded, in eval mode on the accelerator's device."""
    model = build_model(architecture(cfg), classes)
    try:
        state = load_file(str(weights.path))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"--weights: cannot read {weights.path} ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing/unexpected keys or shapes: weights of another network
        raise ConfigError(f"--weights: {weights.path} does not fit the run's model {cfg.model}: "
                          f"{str(err).splitlines()[0]}") from None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return RunModel(cfg, classes, model.eval().to(accelerator.device), weights)


def open_run(run_dir: str | Path, cfg: TrainConfig, classes: ClassList, choice: str | None, *,
             cpu: bool) -> tuple[RunModel, Accelerator, str]:
    """Weights, accelerator and network of a run whose settings (run_settings) are `cfg`, in that order
    (missing weights are refused before any model is built): (run model, accelerator, make_accelerator's note)."""
    weights = choose_weights(run_dir, choice, cfg.epochs)
    accelerator, note = make_accelerator(cfg, cpu)
    return load_run_model(cfg, classes, weights, accelerator), accelerator, note


def class_scores(run: RunModel, images: torch.Tensor, accelerator: Accelerator, tta: str = "none") -> np.ndarray:
    """uint8 [B, 3, S, S] eval-view images -> float32 [B, C] sigmoid scores, as trainer.evaluation.evaluate makes
    them (tta: trainer.evaluation.tta; VOC's logit 0, __background__, is left out)."""
    with torch.no_grad():
        x = normalize(images.to(accelerator.device))
        logits = forward_logits(run.model, x, accelerator)
        return probabilities(run.model, x, logits, run.classes.first_logit, tta, accelerator).cpu().numpy()
