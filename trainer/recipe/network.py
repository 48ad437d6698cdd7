"""The network a config describes, checked before any training: what the trainer and a run's tools build."""

from __future__ import annotations

import torch

from models import create_model
from shards.classes import ClassList
from trainer.config import ConfigError, TrainConfig


def build_model(cfg: TrainConfig, classes: ClassList) -> torch.nn.Module:
    """Registry model with the class list's logits and only the options the user set; checks it maps
    S x S images to those logits."""
    options: dict = {"num_logits": classes.num_logits, **({"weights": cfg.weights} if cfg.weights else {})}
    if cfg.freeze_features:
        options["freeze_features"] = True
    if cfg.pretrained:
        options["pretrained"] = True
    try:
        model = create_model(cfg.model, **options)
    except FileNotFoundError as err:  # pretrained weights not on this machine: the message says where to put them
        raise ConfigError(f"--weights: {err}") from err
    except ValueError as err:  # an option this model does not take, or an unreadable weights file
        raise ConfigError(f"--model {cfg.model}{f' --weights {cfg.weights}' if cfg.weights else ''}: {err}") from err
    model.eval()
    with torch.no_grad():  # one tiny forward now beats a shape error deep inside epoch 1
        try:
            out = model(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"--image-size {cfg.image_size}: model '{cfg.model}' cannot take "
                              f"{cfg.image_size}x{cfg.image_size} inputs (try 227): {err}") from err
    if out.shape != (1, classes.num_logits):
        raise ConfigError(f"--model {cfg.model}: emits {tuple(out.shape)}, expected (1, {classes.num_logits}) logits")
    return model.train()
