"""Every setting of a training run: one dataclass, with its unit and choices in the field metadata.

trainer.config generates the CLI from it and validates it; trainer.config.yaml_files reads the
YAML layers (a --config file, a run's own config.yaml on --resume) into it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from accelerate.utils import LoggerType

from models import list_models
from shards.presets import TRAIN_PRESETS


def _opt(help: str, choices: tuple[str, ...] | None = None, **kw) -> dict:
    # Field metadata drives the CLI: help text (with the unit) and the allowed values.
    return {"metadata": {"help": help, "choices": choices}, **kw}


# Trackers this Accelerate version knows ("all" = every installed one); "none" turns tracking off.
TRACKERS: tuple[str, ...] = ("none", *(tracker.value for tracker in LoggerType))


@dataclass
class TrainConfig:
    # --- data and outputs
    shards: str | None = field(default=None, **_opt("shards directory with manifest.json (required; --resume takes the run's own)"))
    out: str | None = field(default=None, **_opt("run directory for checkpoints and results (required)"))
    config: str | None = field(default=None, **_opt("YAML file of settings; flags on the command line win"))
    # --- which splits the run trains on and selects with (the test split is always scored)
    train_splits: str = field(default="train", **_opt(
        "splits to train on, comma-separated: train (default), or train,val (trainval: the VOC07 protocol of "
        "papers; needs --val-split none)"))
    val_split: str = field(default="val", **_opt(
        "split evaluated during training, whose best epoch is kept in best/; none: no selection and no best/, "
        "the final model is the one tested", ("val", "none")))
    # --- model
    model: str = field(default="final", **_opt(
        "model name from the registry: " + ", ".join(list_models("ours")) + ", or any torchvision classification "
        "model by its torchvision name (convnext_tiny, vit_b_16, ...; `python -m models` lists them all), or "
        "timm/NAME for any timm network when timm is installed"))
    pretrained: bool = field(default=False, **_opt(
        "start a torchvision-named model from torchvision's DEFAULT ImageNet weights, read from "
        "$TORCH_HOME/hub/checkpoints/ under torchvision's file name or from --weights (never downloaded); "
        "a timm/NAME model from --weights only"))
    weights: str | None = field(default=None, **_opt(
        "ImageNet weights file for *_pretrained models and --pretrained (default: the torch hub cache)"))
    freeze_features: bool = field(default=False, **_opt("train only the classifier head (*_pretrained models, --pretrained)"))
    channels_last: bool = field(default=False, **_opt("channels_last memory format (faster convs on CPU/GPU)"))
    # --- schedule; all lengths are in epochs, not steps
    epochs: int = field(default=20, **_opt("number of epochs (epochs, not steps)"))
    batch_size: int = field(default=50, **_opt("images per step PER PROCESS (global = this x processes x grad-accum)"))
    grad_accum: int = field(default=1, **_opt("micro-batches per optimizer update"))
    optimizer: str = field(default="sgd", **_opt("optimizer", ("sgd", "adam", "adamw")))
    lr: float = field(default=0.01, **_opt("peak learning rate (not scaled with the number of processes)"))
    momentum: float = field(default=0.9, **_opt("SGD momentum (sgd only)"))
    weight_decay: float = field(default=0.0, **_opt("weight decay (decoupled for adamw, L2 otherwise)"))
    schedule: str = field(default="none", **_opt("learning-rate schedule", ("none", "cosine", "step")))
    warmup_epochs: float = field(default=0.0, **_opt(
        "linear warm-up length for --schedule cosine or step (epochs, may be fractional)"))
    lr_steps: str | None = field(default=None, **_opt(
        "--schedule step: epochs after which the lr is multiplied by --lr-gamma, comma-separated and increasing, "
        "e.g. 10,15"))
    lr_gamma: float = field(default=0.1, **_opt("--schedule step: lr factor at each of --lr-steps"))
    head_lr_scale: float = field(default=1.0, **_opt(
        "lr multiplier of the layer that makes the logits (the model's last Linear to them)"))
    # Spelled positively: argparse reads any flag starting with --no- as the off switch of a boolean.
    decay_norm_bias: bool = field(default=True, **_opt(
        "weight decay on normalization weights and biases too; --no-decay-norm-bias exempts them"))
    clip_grad_norm: float = field(default=0.0, **_opt("clip the global gradient norm to this before each update (0 = off)"))
    sync_bn: bool = field(default=False, **_opt("BatchNorm statistics over all processes (SyncBatchNorm; GPU runs)"))
    # --- loss and data view
    loss: str = field(default="multilabel_soft_margin", **_opt(
        "loss over the logits; asl: asymmetric loss (Ridnik et al. 2021)", ("multilabel_soft_margin", "bce", "asl")))
    asl_gamma_neg: float = field(default=4.0, **_opt("--loss asl: focusing exponent on negatives"))
    asl_gamma_pos: float = field(default=0.0, **_opt("--loss asl: focusing exponent on positives"))
    asl_clip: float = field(default=0.05, **_opt("--loss asl: probability margin shifted off negatives (0 = none)"))
    label_smoothing: float = field(default=0.0, **_opt(
        "targets y*(1-EPS)+EPS/2 per class logit, for --loss bce or asl (0 = off)"))
    pos_weight: str = field(default="none", **_opt("per-class positive weights for --loss bce; auto = negatives/positives from the manifest", ("none", "auto")))
    augment: str = field(default="none", **_opt(
        "train augmentation preset (shards.presets); randaugment and trivialaugment are crop_flip then torchvision's "
        "policy", TRAIN_PRESETS))
    random_erasing: float = field(default=0.0, **_opt(
        "probability of torchvision's RandomErasing on each training image, after the preset (0 = off)"))
    mixup: float = field(default=0.0, **_opt(
        "multi-label mixup: Beta(ALPHA, ALPHA) mixing weight for images and targets (0 = off; trainer/recipe/mixing.py)"))
    cutmix: float = field(default=0.0, **_opt(
        "multi-label cutmix: Beta(ALPHA, ALPHA) area kept, targets mixed by the pasted area (0 = off); with "
        "--mixup too, each batch takes one of the two at random"))
    image_size: int = field(default=227, **_opt("square input size in pixels, train and eval"))
    ema_decay: float = field(default=0.0, **_opt(
        "exponential moving average of the weights, updated after every optimizer update (0 = off; 0.999 to "
        "0.9999 are usual); each evaluation scores it too (trainer/recipe/ema.py)"))
    # --- evaluation
    test_frequency: int = field(default=5, **_opt("evaluate val and train mAP at epoch 1, every N epochs and the last (epochs)"))
    test_with: str = field(default="final", **_opt(
        "weights that write submission.csv: final; best (the best val mAP, of the model or with --ema-decay of "
        "its average); ema (the final average)", ("final", "best", "ema")))
    tta: str = field(default="none", **_opt(
        "test-time augmentation of the val and test scores: flip averages each image's and its horizontal "
        "mirror's probabilities (trainer/evaluation/tta.py)", ("none", "flip")))
    # --- runtime
    mixed_precision: str = field(default="no", **_opt("autocast dtype; CPU supports bf16 only, fp16 needs a GPU", ("no", "bf16", "fp16")))
    cpu: bool = field(default=False, **_opt("run on CPU even when a GPU is visible"))
    loader: str = field(default="auto", **_opt("data source: stream decodes the shards every epoch; device decodes them once into "
                                               "the device's memory; auto picks device when it fits (trainer/data/device.py)",
                                               ("auto", "stream", "device")))
    decoded_cache: str = field(default="auto", **_opt(
        "--loader device keeps the decoded splits here for later runs (shards/decoded_cache.py): auto = SHARDS/cache "
        "when the shard folder is writable, else ~/.cache/voc-trainer/decoded; off; or a folder"))
    compile: bool = field(default=False, **_opt("torch.compile the model (inductor, through Accelerate); the first steps compile"))
    workers: int | None = field(default=None, **_opt(
        "data-loading worker processes PER PROCESS; default: the CPUs this process may use, shared among the "
        "processes on its machine, 1 to 8 (trainer/data/choose.py)"))
    seed: int = field(default=0, **_opt("seed of weights, data order and augmentation"))
    hang_timeout: float = field(default=600.0, **_opt(
        "seconds any single wait may last (next batch, collective, checkpoint save) before the process ends "
        "itself with one error line and exit status 124; 0 = wait forever (trainer/faults/watchdog.py)"))
    # --- checkpoints and logging
    resume: bool = field(default=False, **_opt("continue from the latest complete checkpoint in --out"))
    keep_checkpoints: int = field(default=2, **_opt("how many of the newest checkpoints to keep"))
    checkpoint_every_steps: int = field(default=0, **_opt("also checkpoint every N optimizer steps (0 = only at epoch ends)"))
    log_with: str = field(default="none", **_opt("experiment tracker through Accelerate", TRACKERS))
    debug: bool = field(default=False, **_opt("one process, 3 batches per epoch, anomaly detection, shape printout"))


# Settings a resumed run must keep, because the checkpoint or the run's history depends on them:
# model, freeze_features: the state dict and which parameters the optimizer state covers;
# pretrained: where the run's weights started (the checkpoint replaces them, but the recipe differs);
# optimizer, lr, momentum, weight_decay: the restored optimizer state overrides them silently;
# batch_size, grad_accum, schedule, warmup_epochs: steps per epoch, the position of a mid-epoch
#   checkpoint and the LR curve (epochs too under a schedule: see FROZEN_WITH_SCHEDULE);
# seed: the data order of the epoch being resumed, so a mid-epoch resume skips what it saw;
# loss, pos_weight, asl_*, label_smoothing, augment (random_erasing, mixup, cutmix), image_size,
#   ema_decay, tta: what the logged history measures (tta: the val mAP that picks best/); one
#   config.yaml must describe the whole run;
# head_lr_scale, decay_norm_bias: the optimizer's parameter groups, which its saved state matches;
# lr_steps, lr_gamma: the LR curve; clip_grad_norm, sync_bn: how every update is computed;
# train_splits, val_split: the data the run learns from and the epochs best/ was chosen among.
# Free to change: epochs (extend a constant-LR run), the data location (shards), where the
# pretrained file lies (weights: the checkpoint replaces those weights anyway), speed and
# hardware knobs (workers, mixed_precision, cpu, channels_last, compile, loader: the two loaders
# order an epoch differently, so a mid-epoch resume under the other one trains the rest of
# that epoch in the other order), evaluation, logging,
# checkpointing and debug.
FROZEN_ON_RESUME: tuple[str, ...] = (
    "model", "pretrained", "freeze_features", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "grad_accum",
    "schedule", "warmup_epochs", "seed", "loss", "pos_weight", "augment", "image_size", "train_splits", "val_split",
    "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "label_smoothing", "head_lr_scale", "decay_norm_bias",
    "clip_grad_norm", "sync_bn", "lr_steps", "lr_gamma", "random_erasing", "mixup", "cutmix", "ema_decay", "tta",
)
# A cosine schedule spans --epochs: more epochs would bend the rest of the curve (LR jumps back up).
FROZEN_WITH_SCHEDULE: tuple[str, ...] = ("epochs",)
# Never taken from a saved run: they say where this invocation reads and writes, not how it trains.
NOT_INHERITED: frozenset[str] = frozenset({"out", "config", "resume"})


def flag(name: str) -> str:
    """The command-line spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def scalar_type(f: dataclasses.Field) -> type:
    # `str | None` -> str: the CLI only ever parses the non-None member.
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint




TRAINABLE_SPLITS: tuple[str, ...] = ("train", "val")  # test is what a run is scored on, never trained on


def train_split_names(cfg: TrainConfig) -> tuple[str, ...]:
    """--train-splits as a tuple of split names, in the order given (validated by trainer.config)."""
    return tuple(name.strip() for name in cfg.train_splits.split(","))


def train_split(cfg: TrainConfig) -> str:
    """The name the training data goes by in the manifest's readers: one split, or "train+val"
    (shards.manifest.split_entry merges the parts)."""
    return "+".join(train_split_names(cfg))


def lr_step_epochs(cfg: TrainConfig) -> tuple[int, ...]:
    """--lr-steps as epoch numbers, () when unset (validated by trainer.config)."""
    return tuple(int(epoch) for epoch in cfg.lr_steps.split(",")) if cfg.lr_steps else ()


def eval_splits(cfg: TrainConfig) -> tuple[str, ...]:
    """Every split a run evaluates: its training data (train mAP), the --val-split unless none, and test."""
    return (train_split(cfg), *(() if cfg.val_split == "none" else (cfg.val_split,)), "test")


def as_dict(cfg: TrainConfig) -> dict:
    """Plain dict of every field, for config.yaml and experiment trackers."""
    return dataclasses.asdict(cfg)
