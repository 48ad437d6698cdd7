"""Every setting of a training run: one dataclass, its CLI, an optional YAML file, validation.

The CLI is generated from the dataclass fields (``batch_size`` -> ``--batch-size``), so a
setting exists in exactly one place with its unit in its comment. Precedence, lowest first:
field default < the run's own RUN/config.yaml (only with ``--resume``) < ``--config FILE``
(YAML) < command line. Everything is validated here, before any process builds a model or
reads a shard, and every error names the flag (and the YAML file when the value came from
there) together with what to do about it.

``python -m trainer.config ARGS...`` checks ARGS exactly like the trainer and prints the
resolved settings as YAML (exit 0) or one ``error: ...`` line on stderr (exit 2); launch.sh
runs it once before starting N processes that would each print the same error.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate.utils import LoggerType

from models import list_models
from shards.manifest import load_manifest
from shards.transforms import TRAIN_PRESETS


class ConfigError(ValueError):
    """A setting that cannot work; the message starts with the flag it concerns."""


def _opt(help: str, choices: tuple[str, ...] | None = None, **kw) -> dict:
    # Field metadata drives the CLI: help text (with the unit) and the allowed values.
    return {"metadata": {"help": help, "choices": choices}, **kw}


# Trackers this Accelerate version knows ("all" = every installed one); "none" turns tracking off.
TRACKERS: tuple[str, ...] = ("none", *(tracker.value for tracker in LoggerType))


@dataclass
class TrainConfig:
    # --- data and outputs
    shards: str | None = field(default=None, **_opt("shards directory with manifest.json (required)"))
    out: str | None = field(default=None, **_opt("run directory for checkpoints and results (required)"))
    config: str | None = field(default=None, **_opt("YAML file of settings; flags on the command line win"))
    # --- model
    model: str = field(default="final", **_opt("model name from the registry: " + ", ".join(list_models())))
    weights: str | None = field(default=None, **_opt("pretrained weights file (pretrained models only)"))
    freeze_features: bool = field(default=False, **_opt("train only the classifier head (pretrained models)"))
    channels_last: bool = field(default=False, **_opt("channels_last memory format (faster convs on CPU/GPU)"))
    # --- schedule; all lengths are in epochs, not steps
    epochs: int = field(default=20, **_opt("number of epochs (epochs, not steps)"))
    batch_size: int = field(default=50, **_opt("images per step PER PROCESS (global = this x processes x grad-accum)"))
    grad_accum: int = field(default=1, **_opt("micro-batches per optimizer update"))
    optimizer: str = field(default="sgd", **_opt("optimizer", ("sgd", "adam", "adamw")))
    lr: float = field(default=0.01, **_opt("peak learning rate (not scaled with the number of processes)"))
    momentum: float = field(default=0.9, **_opt("SGD momentum (sgd only)"))
    weight_decay: float = field(default=0.0, **_opt("weight decay (decoupled for adamw, L2 otherwise)"))
    schedule: str = field(default="none", **_opt("learning-rate schedule", ("none", "cosine")))
    warmup_epochs: float = field(default=0.0, **_opt("linear warm-up length for --schedule cosine (epochs, may be fractional)"))
    # --- loss and data view
    loss: str = field(default="multilabel_soft_margin", **_opt("loss over the 21 logits", ("multilabel_soft_margin", "bce")))
    pos_weight: str = field(default="none", **_opt("per-class positive weights for --loss bce; auto = negatives/positives from the manifest", ("none", "auto")))
    augment: str = field(default="none", **_opt("train augmentation preset (shards.transforms)", TRAIN_PRESETS))
    image_size: int = field(default=227, **_opt("square input size in pixels, train and eval"))
    # --- evaluation
    test_frequency: int = field(default=5, **_opt("evaluate val and train mAP at epoch 1, every N epochs and the last (epochs)"))
    test_with: str = field(default="final", **_opt("model that writes submission.csv", ("final", "best")))
    # --- runtime
    mixed_precision: str = field(default="no", **_opt("autocast dtype; CPU supports bf16 only, fp16 needs a GPU", ("no", "bf16", "fp16")))
    cpu: bool = field(default=False, **_opt("run on CPU even when a GPU is visible"))
    workers: int = field(default=4, **_opt("data-loading worker processes PER PROCESS"))
    seed: int = field(default=0, **_opt("seed of weights, data order and augmentation"))
    # --- checkpoints and logging
    resume: bool = field(default=False, **_opt("continue from the latest complete checkpoint in --out"))
    keep_checkpoints: int = field(default=2, **_opt("how many of the newest checkpoints to keep"))
    checkpoint_every_steps: int = field(default=0, **_opt("also checkpoint every N optimizer steps (0 = only at epoch ends)"))
    log_with: str = field(default="none", **_opt("experiment tracker through Accelerate", TRACKERS))
    debug: bool = field(default=False, **_opt("one process, 3 batches per epoch, anomaly detection, shape printout"))


# Settings a resumed run must keep, because the checkpoint or the run's history depends on them:
# model, freeze_features: the state dict and which parameters the optimizer state covers;
# optimizer, lr, momentum, weight_decay: the restored optimizer state overrides them silently;
# batch_size, grad_accum, schedule, warmup_epochs: steps per epoch, the position of a mid-epoch
#   checkpoint and the LR curve (epochs too under a schedule: see FROZEN_WITH_SCHEDULE);
# seed: the data order of the epoch being resumed, so a mid-epoch resume skips what it saw;
# loss, pos_weight, augment, image_size: what the logged history measures; one config.yaml
#   must describe the whole run.
# Free to change: epochs (extend a constant-LR run), the data location (shards), where the
# pretrained file lies (weights: the checkpoint replaces those weights anyway), speed and
# hardware knobs (workers, mixed_precision, cpu, channels_last), evaluation, logging,
# checkpointing and debug.
FROZEN_ON_RESUME: tuple[str, ...] = (
    "model", "freeze_features", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "grad_accum",
    "schedule", "warmup_epochs", "seed", "loss", "pos_weight", "augment", "image_size",
)
# A cosine schedule spans --epochs: more epochs would bend the rest of the curve (LR jumps back up).
FROZEN_WITH_SCHEDULE: tuple[str, ...] = ("epochs",)
# Never taken from a saved run: they say where this invocation reads and writes, not how it trains.
NOT_INHERITED: frozenset[str] = frozenset({"out", "config", "resume"})
RUN_CONFIG = "config.yaml"  # RUN/config.yaml, written by trainer.provenance: {settings: {...}, ...}


def flag(name: str) -> str:
    """The command-line spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _scalar_type(f: dataclasses.Field) -> type:
    # `str | None` -> str: the CLI only ever parses the non-None member.
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


class _Parser(argparse.ArgumentParser):
    # One ConfigError line instead of the 15-line usage block argparse prints on every process.
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message.removeprefix('argument ')} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """argparse parser generated from TrainConfig; defaults are None so YAML can fill the gaps.

    A malformed flag (``--epochs abc``) raises ConfigError naming it; ``--help`` still exits 0.
    """
    parser = _Parser(
        prog="trainer/main.py",
        description="Train a multi-label VOC 2007 classifier (run it with `accelerate launch` for DDP).",
        argument_default=None,
    )
    for f in dataclasses.fields(TrainConfig):
        kind, meta = _scalar_type(f), f.metadata
        help_text = f"{meta['help']} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            # metavar None lets argparse show the choices, e.g. {sgd,adam,adamw}
            parser.add_argument(flag(f.name), dest=f.name, type=kind, choices=meta["choices"],
                                metavar=None if meta["choices"] else f.name.upper(), help=help_text)
    return parser


def _load_yaml(path: Path, label: str) -> object:
    """Parse one YAML file; a syntax error names the file and its line instead of a traceback."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        context_mark = getattr(err, "context_mark", None)
        if context and context_mark:
            what += f" ({context} opened at line {context_mark.line + 1})"
        raise ConfigError(f"{label}: not valid YAML{where}: {what}") from None


def _typed(raw: dict, label: str, source: str) -> dict:
    """YAML keys may use dashes or underscores; an unknown key or a wrongly typed value is an error."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in fields or name == "config":
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{label}: unknown key '{key}'{hint} (keys are the flags without '--')")
        values[name] = _coerce(name, _scalar_type(fields[name]), value, source)
    return values


def _coerce(name: str, kind: type, value: object, source: str) -> object:
    """A YAML value as the field's type, or a ConfigError naming the flag and the file."""
    if value is None:
        return None
    # YAML 1.1 reads `3e-3` (no dot) as a string; float() reads it as a number, like the CLI does.
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    # bool is an int subclass, but `epochs: true` is a mistake, not 1.
    if (isinstance(value, kind) or (kind is float and isinstance(value, int))) and \
            (kind is bool or not isinstance(value, bool)):
        return kind(value)
    raise ConfigError(f"{flag(name)} (from {source}): expected {kind.__name__}, got {value!r}")


def _read_yaml(path: str) -> dict:
    """The --config file as {field: value}."""
    if not Path(path).is_file():
        raise ConfigError(f"--config: no such file {path}")
    raw = _load_yaml(Path(path), f"--config {path}") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of setting: value, got {type(raw).__name__}")
    return _typed(raw, f"--config {path}", path)


def _read_run_settings(run_dir: str) -> tuple[dict, str | None]:
    """Settings a run recorded in RUN/config.yaml, minus where-to-read/write; ({}, None) without one."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        return {}, None
    label = f"--resume: {path}"
    record = _load_yaml(path, label)
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ConfigError(f"{label}: has no 'settings' mapping; it is not a run's config.yaml "
                          "(restore it, or start a new --out)")
    settings = {k: v for k, v in record["settings"].items() if str(k).replace("-", "_") not in NOT_INHERITED}
    return _typed(settings, label, str(path)), str(path)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Command line (+ optional YAML, + the run's own settings on --resume) -> validated TrainConfig.

    Raises ConfigError on a bad or malformed value, and on --resume when a setting the checkpoint
    fixes (FROZEN_ON_RESUME) differs from the run's RUN/config.yaml.
    """
    cli = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    from_yaml = _read_yaml(cli["config"]) if cli.get("config") else {}
    chosen = {**from_yaml, **cli}
    saved, saved_path = _read_run_settings(chosen["out"]) if chosen.get("resume") and chosen.get("out") else ({}, None)
    cfg = TrainConfig(**{**saved, **chosen})
    sources = {name: saved_path for name in set(saved) - set(chosen)}
    sources |= {name: cfg.config for name in set(from_yaml) - set(cli)}
    validate(cfg, sources)
    if saved_path:
        _check_unchanged(cfg, saved, saved_path, sources)
    return cfg


def _check_unchanged(cfg: TrainConfig, saved: dict, saved_path: str, sources: dict[str, str]) -> None:
    frozen = FROZEN_ON_RESUME + (FROZEN_WITH_SCHEDULE if cfg.schedule != "none" else ())
    for name in frozen:
        if name in saved and getattr(cfg, name) != saved[name]:
            raise ConfigError(
                f"{_where(name, sources)}: {getattr(cfg, name)!r} differs from {saved[name]!r} in {saved_path}, "
                f"and --resume cannot change it (the checkpoint and history depend on it); drop the setting "
                f"to continue the run, or start a new --out to train with the new value")


def _where(name: str, sources: dict[str, str]) -> str:
    return f"{flag(name)} (from {sources[name]})" if sources.get(name) else flag(name)


def validate(cfg: TrainConfig, sources: dict[str, str] | None = None) -> None:
    """Refuse a config that cannot train, naming the flag; cheap checks only (no model is built).

    ``sources`` maps a field to the YAML file its value came from, so the error names that file.
    """
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{_where(name, sources or {})}: {why}")

    for f in dataclasses.fields(TrainConfig):  # choices again: YAML values bypass argparse
        choices = f.metadata["choices"]
        if choices and getattr(cfg, f.name) not in choices:
            fail(f.name, f"{getattr(cfg, f.name)!r} is not one of {', '.join(choices)}")
    for name in ("shards", "out"):
        if not getattr(cfg, name):
            fail(name, "is required")
    shards = Path(cfg.shards)
    if not shards.is_dir():
        fail("shards", f"no such directory {shards}; give the --out of `python -m shards.pack`")
    if not (shards / "manifest.json").is_file():
        looks_like_voc = (shards / "VOC2007").is_dir() or (shards / "JPEGImages").is_dir()
        fail("shards", f"{shards} has no manifest.json" + (
            f": it is a VOC folder, not shards; pack it first with `python -m shards.pack --voc {shards} --out SHARDS_DIR`"
            if looks_like_voc else "; give the --out of `python -m shards.pack --voc VOCDEVKIT --out SHARDS_DIR`"))
    try:
        splits = load_manifest(cfg.shards)["splits"]
    except Exception as err:  # the manifest's own message names the file and the problem
        fail("shards", str(err))
    for split in ("train", "val", "test"):
        if not splits.get(split, {}).get("count"):
            fail("shards", f"manifest has no images in split '{split}'; pack train, val and test")
    ckpts = Path(cfg.out) / "checkpoints"
    if not cfg.resume and ckpts.is_dir() and any(p.is_dir() for p in ckpts.iterdir()):
        fail("out", f"{cfg.out} already holds checkpoints of a run: pass --resume to continue it, "
                    "or choose a new --out (a fresh run never overwrites another run)")
    if cfg.model not in list_models():
        close = difflib.get_close_matches(cfg.model, list_models(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        fail("model", f"unknown model '{cfg.model}'; {hint}known: {', '.join(list_models())}")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        fail("weights", f"no such file {cfg.weights}")
    for name, low in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("test_frequency", 1),
                      ("workers", 0), ("keep_checkpoints", 1), ("checkpoint_every_steps", 0), ("image_size", 32)):
        if getattr(cfg, name) < low:
            fail(name, f"must be >= {low}, got {getattr(cfg, name)}")
    for f in dataclasses.fields(TrainConfig):  # nan/inf pass every comparison below unnoticed
        if _scalar_type(f) is float and not math.isfinite(getattr(cfg, f.name)):
            fail(f.name, f"must be a finite number, got {getattr(cfg, f.name)}")
    if not cfg.lr > 0:
        fail("lr", f"must be > 0, got {cfg.lr}")
    if cfg.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.momentum < 1:
        fail("momentum", f"must be in [0, 1), got {cfg.momentum}")
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        fail("warmup_epochs", f"must be in [0, --epochs={cfg.epochs}), got {cfg.warmup_epochs}")
    if cfg.warmup_epochs > 0 and cfg.schedule == "none":
        fail("warmup_epochs", "warm-up is part of --schedule cosine; set --schedule cosine or drop it")
    if cfg.pos_weight == "auto" and cfg.loss != "bce":
        fail("pos_weight", "positive weights need --loss bce (MultiLabelSoftMarginLoss has none)")
    if cfg.mixed_precision == "fp16" and _runs_on_cpu(cfg):
        fail("mixed_precision", "fp16 needs a GPU; on CPU use bf16 (or no)")
    if cfg.log_with == "tensorboard":
        from accelerate.utils import is_tensorboard_available
        if not is_tensorboard_available():
            fail("log_with", "tensorboard is not installed: pip install tensorboard (or --log-with none)")


def _runs_on_cpu(cfg: TrainConfig) -> bool:
    # ACCELERATE_USE_CPU is the launcher's CPU switch (not a rank variable): honour it like Accelerator does.
    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return cfg.cpu or forced or not torch.cuda.is_available()


def as_dict(cfg: TrainConfig) -> dict:
    """Plain dict of every field, for config.yaml and experiment trackers."""
    return dataclasses.asdict(cfg)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.config ARGS``: validate like the trainer, print the resolved settings."""
    try:
        cfg = parse_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
