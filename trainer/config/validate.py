"""Refuse a config that cannot train, before any process builds a model or reads a shard.

Every refusal is a ConfigError that names the flag (and the YAML file when the value came from
there) and what to do about it. Cheap checks only: the model is built on the meta device, for its
shapes; the shards' checksums are read once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from models import PretrainedWeightsMissing, check_model_name, find_pretrained_file, takes_option
from models.input_sizes import input_size_problem
from models.logits import logit_layer
from models.registry import meta_architecture
from shards.classes import ClassList, class_list
from shards.manifest import is_labeled, load_manifest
from shards.verify import bad_shards, has_checksums, summarize
from trainer.config.fields import TRAINABLE_SPLITS, TrainConfig, flag, lr_step_epochs, scalar_type, train_split_names
from trainer.faults.disk_errors import existing_ancestor
from trainer.faults.exits import ConfigError
from trainer.rundir import lock
from trainer.rundir.checkpoint import checkpoint_dirs

REQUIRED: tuple[str, ...] = ("shards", "out")

Fail = Callable[[str, str], None]  # fail(field name, why): raises ConfigError naming the flag


def where(name: str, sources: dict[str, str]) -> str:
    """The flag, and the file its value came from when it was not the command line."""
    return f"{flag(name)} (from {sources[name]})" if sources.get(name) else flag(name)


def validate(cfg: TrainConfig, sources: dict[str, str] | None = None, *, check_in_use: bool = False) -> None:
    """Raise ConfigError for the first setting that cannot work.

    ``sources`` maps a field to the YAML file its value came from, so the error names that file.
    ``check_in_use``: also refuse an --out another run holds now. Only for a check made before
    the launch (`python -m trainer.config`): a rank must not peek, since its own main process may
    already hold the lock (trainer/rundir/lock.py takes it and tells every rank).
    """
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{where(name, sources or {})}: {why}")

    for f in dataclasses.fields(TrainConfig):  # choices again: YAML values bypass argparse
        choices = f.metadata["choices"]
        if choices and getattr(cfg, f.name) not in choices:
            fail(f.name, f"{getattr(cfg, f.name)!r} is not one of {', '.join(choices)}")
    for name in REQUIRED:
        if not getattr(cfg, name):
            fail(name, "is required")
    _check_out(cfg, fail, check_in_use)
    classes = _check_shards(cfg, fail)
    try:
        check_model_name(cfg.model)
    except ValueError as err:
        fail("model", str(err))
    _check_pretrained(cfg, fail, sources or {})
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        fail("weights", f"no such file {cfg.weights}")
    _check_numbers(cfg, fail)
    # Shapes only (meta device, no weights read: models/input_sizes.py), ~1-100 ms: a model that cannot
    # take the input size is refused here, before launch.sh starts any process, not inside the run.
    too_small = input_size_problem(cfg.model, cfg.image_size, classes.num_logits)
    if too_small:
        raise ConfigError(f"--model {cfg.model} --image-size {cfg.image_size}: {too_small}"
                          + "".join(f" (--{n.replace('_', '-')} from {sources[n]})"
                                    for n in ("model", "image_size") if (sources or {}).get(n)))
    _check_recipe(cfg, fail)
    _check_loss_and_updates(cfg, fail)
    if cfg.head_lr_scale != 1:
        _check_logit_layer(cfg.model, classes.num_logits, fail)


def _check_out(cfg: TrainConfig, fail: Fail, check_in_use: bool) -> None:
    """--out can become this run's folder: writable, not held by another run, no other run's checkpoints."""
    unwritable = _why_unwritable(Path(cfg.out))
    if unwritable:
        fail("out", unwritable)
    holder = lock.holder(cfg.out) if check_in_use else None
    if holder:
        fail("out", f"{cfg.out} is in use by another run ({holder}); wait for it to end, or choose another folder")
    if not cfg.resume and checkpoint_dirs(cfg.out):
        fail("out", f"{cfg.out} already holds checkpoints of a run: pass --resume to continue it, "
                    "or choose a new --out (a fresh run never overwrites another run)")


def _check_shards(cfg: TrainConfig, fail: Fail) -> ClassList:
    """--shards is a packed, intact shard set with labeled splits to learn from and a test split;
    returns its class list."""
    shards = Path(cfg.shards)
    if not shards.is_dir():
        fail("shards", f"no such directory {shards}; give the --out of `python -m shards.pack`")
    if not (shards / "manifest.json").is_file():
        looks_like_voc = (shards / "VOC2007").is_dir() or (shards / "JPEGImages").is_dir()
        fail("shards", f"{shards} has no manifest.json" + (
            f": it is a VOC folder, not shards; pack it first with `python -m shards.pack --voc {shards} --out SHARDS_DIR`"
            if looks_like_voc else "; give the --out of `python -m shards.pack` (--voc, --coco or --labels)"))
    try:
        manifest = load_manifest(cfg.shards)
    except Exception as err:  # the manifest's own message names the file and the problem
        fail("shards", str(err))
    trained = _check_splits(cfg, fail)
    splits = manifest["splits"]
    learned = [*trained, *([cfg.val_split] if cfg.val_split != "none" else [])]
    for split in (*learned, "test"):
        if not splits.get(split, {}).get("count"):
            fail("shards", f"manifest has no images in split '{split}'; pack {', '.join(learned)} and test "
                           f"(packed: {', '.join(splits) or 'none'})")
    for split in learned:  # test may be unlabeled (hidden labels): it is only scored
        if not is_labeled(splits[split]):
            fail("shards", f"split '{split}' of {cfg.shards} was packed without annotations (labels hidden); "
                           f"training needs labeled {' and '.join(learned)}: pack them with their labels (a VOC "
                           f"tree with Annotations/ for every {split} id, COCO's instances json, a labels CSV)")
    bad = bad_shards(cfg.shards, manifest) if has_checksums(manifest) else []  # old manifests: the run warns
    if bad:
        fail("shards", f"{len(bad)} bad shard(s) in {cfg.shards}: {summarize(bad)}; pack again or copy the shard "
                       f"set again (python -m shards.verify {cfg.shards} checks it)")
    return class_list(manifest)


def _check_splits(cfg: TrainConfig, fail: Fail) -> tuple[str, ...]:
    """--train-splits and --val-split together; returns the split names trained on."""
    names = train_split_names(cfg)
    wrong = [name for name in names if name not in TRAINABLE_SPLITS]
    if wrong or len(set(names)) != len(names):
        why = "test is what the run is scored on" if "test" in wrong else "each split once"
        fail("train_splits", f"{cfg.train_splits!r}: give {' or '.join(TRAINABLE_SPLITS)} or both, comma-separated "
                             f"({why}), e.g. train,val")
    if cfg.val_split in names:
        fail("val_split", f"{cfg.val_split} is also trained on (--train-splits {cfg.train_splits}): its mAP would "
                          f"pick the best epoch on training data; give --val-split none (the final model is tested)")
    if cfg.test_with == "ema" and cfg.ema_decay == 0:
        fail("test_with", "ema needs an average of the weights: set --ema-decay (e.g. 0.999)")
    if cfg.val_split == "none" and cfg.test_with == "best":
        fail("test_with", "best needs a validation split, and --val-split is none: use --test-with final")
    return names


def _check_pretrained(cfg: TrainConfig, fail: Fail, sources: dict[str, str]) -> None:
    """--pretrained only for models with ImageNet weights, whose file is on this machine; on those
    models --weights and --freeze-features need it (without it they start from random weights)."""
    takes = takes_option(cfg.model, "pretrained")
    if cfg.pretrained and not takes:
        fail("pretrained", f"model {cfg.model} loads its ImageNet weights already: drop --pretrained"
             if cfg.model.endswith("_pretrained") else f"model {cfg.model} has no ImageNet weights to load; "
             "the torchvision-named and timm/ models have them (python -m models lists every model)")
    if takes and not cfg.pretrained:
        for name in ("weights", "freeze_features"):
            if getattr(cfg, name):
                fail(name, f"goes with ImageNet weights: add --pretrained (without it {cfg.model} starts "
                           "from random weights)")
    if cfg.pretrained and cfg.weights is None:
        try:
            find_pretrained_file(cfg.model)
        except PretrainedWeightsMissing as err:  # the cause tells trainer.suite "no weights" from bad settings
            raise ConfigError(f"{where('pretrained', sources)}: {err}") from err


def _check_numbers(cfg: TrainConfig, fail: Fail) -> None:
    """Counts, sizes and rates within their ranges; no nan or inf anywhere."""
    for name, low in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("test_frequency", 1),
                      ("workers", 0), ("keep_checkpoints", 1), ("checkpoint_every_steps", 0), ("image_size", 32),
                      ("hang_timeout", 0)):
        if getattr(cfg, name) is not None and getattr(cfg, name) < low:
            fail(name, f"must be >= {low}, got {getattr(cfg, name)}")
    for f in dataclasses.fields(TrainConfig):  # nan/inf pass every comparison below unnoticed
        if scalar_type(f) is float and not math.isfinite(getattr(cfg, f.name)):
            fail(f.name, f"must be a finite number, got {getattr(cfg, f.name)}")
    if not cfg.lr > 0:
        fail("lr", f"must be > 0, got {cfg.lr}")
    if cfg.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.momentum < 1:
        fail("momentum", f"must be in [0, 1), got {cfg.momentum}")
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        fail("warmup_epochs", f"must be in [0, --epochs={cfg.epochs}), got {cfg.warmup_epochs}")
    if not 0 <= cfg.random_erasing <= 1:
        fail("random_erasing", f"is a probability: give 0 (off) to 1, got {cfg.random_erasing}")
    if not 0 <= cfg.ema_decay < 1:
        fail("ema_decay", f"must be in [0, 1) (0 = off; 0.999 to 0.9999 are usual), got {cfg.ema_decay}")
    for name in ("mixup", "cutmix"):
        if getattr(cfg, name) < 0:
            fail(name, f"is the Beta distribution's ALPHA: give 0 (off) or more (0.2 to 1 are usual), got {getattr(cfg, name)}")


def _check_recipe(cfg: TrainConfig, fail: Fail) -> None:
    """Settings that only work together, and what this machine must have for them."""
    if cfg.warmup_epochs > 0 and cfg.schedule == "none":
        fail("warmup_epochs", "warm-up is part of --schedule cosine or step; set one of them or drop it")
    if cfg.pos_weight == "auto" and cfg.loss != "bce":
        fail("pos_weight", "positive weights need --loss bce (MultiLabelSoftMarginLoss has none)")
    if cfg.mixed_precision == "fp16" and _runs_on_cpu(cfg):
        fail("mixed_precision", "fp16 needs a GPU; on CPU use bf16 (or no)")
    if cfg.sync_bn and _runs_on_cpu(cfg):
        fail("sync_bn", "SyncBatchNorm needs GPUs (NCCL); drop --sync-bn on a CPU run")
    if cfg.log_with != "none":
        from accelerate.tracking import get_available_trackers
        installed = [str(tracker) for tracker in get_available_trackers()]
        if cfg.log_with == "all" and not installed:
            fail("log_with", "no experiment tracker is installed (pip install tensorboard, for one), or use --log-with none")
        if cfg.log_with != "all" and cfg.log_with not in installed:
            # Accelerate's tracker names are their pip names (comet_ml too: pip normalizes the underscore).
            fail("log_with", f"{cfg.log_with} is not installed: pip install {cfg.log_with} (or --log-with none)")


def _check_loss_and_updates(cfg: TrainConfig, fail: Fail) -> None:
    """The loss's own settings, the step schedule, and the per-update knobs: each only where it acts."""
    defaults = TrainConfig()
    for name in ("asl_gamma_neg", "asl_gamma_pos", "asl_clip"):
        if cfg.loss != "asl" and getattr(cfg, name) != getattr(defaults, name):
            fail(name, f"is a setting of --loss asl (the loss is {cfg.loss}); set --loss asl or drop it")
        if getattr(cfg, name) < 0:
            fail(name, f"must be >= 0, got {getattr(cfg, name)}")
    if not cfg.asl_clip < 1:
        fail("asl_clip", f"must be in [0, 1) (a probability margin), got {cfg.asl_clip}")
    if not 0 <= cfg.label_smoothing < 1:
        fail("label_smoothing", f"must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.label_smoothing and cfg.loss == "multilabel_soft_margin":
        fail("label_smoothing", "needs --loss bce (the same loss as multilabel_soft_margin) or asl")
    if not cfg.head_lr_scale > 0:
        fail("head_lr_scale", f"must be > 0, got {cfg.head_lr_scale}")
    if cfg.clip_grad_norm < 0:
        fail("clip_grad_norm", f"must be >= 0 (0 = off), got {cfg.clip_grad_norm}")
    if cfg.schedule != "step":
        if cfg.lr_steps or cfg.lr_gamma != defaults.lr_gamma:
            fail("lr_steps" if cfg.lr_steps else "lr_gamma", "is part of --schedule step; set it or drop this")
        return
    if not 0 < cfg.lr_gamma <= 1:
        fail("lr_gamma", f"must be in (0, 1], got {cfg.lr_gamma}")
    try:
        steps = lr_step_epochs(cfg)
    except ValueError:
        fail("lr_steps", f"{cfg.lr_steps!r}: give whole epochs, comma-separated, e.g. 10,15")
    if not steps:
        fail("lr_steps", "--schedule step needs the epochs to lower the lr after, e.g. --lr-steps 10,15")
    if any(b <= a for a, b in zip(steps, steps[1:])) or not 0 < steps[0] or not steps[-1] < cfg.epochs:
        fail("lr_steps", f"{cfg.lr_steps!r}: give increasing epochs between 1 and --epochs - 1 ({cfg.epochs - 1})")


def _check_logit_layer(model: str, num_logits: int, fail: Fail) -> None:
    """--head-lr-scale needs a layer that makes the logits; its layers alone (meta device) tell."""
    network = meta_architecture(model, num_logits)
    try:
        logit_layer(network, num_logits)
    except ValueError as err:
        fail("head_lr_scale", f"{err} (--model {model}); drop --head-lr-scale for this model")


def _why_unwritable(out: Path) -> str | None:
    """Why --out cannot become a run directory, or None. Writes nothing: access(2) sees permissions
    and read-only mounts (a run then fails at its first write, in every process at once)."""
    if out.exists() and not out.is_dir():
        return f"{out} exists and is not a folder; choose a folder for the run"
    existing = existing_ancestor(out)
    if not existing.is_dir():
        return f"{existing} is a file, so {out} cannot be created; choose another --out"
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if bool(os.statvfs(existing).f_flag & os.ST_RDONLY) else "no write permission"
        return f"cannot write into {existing} ({why}); choose another --out"
    return None


def _runs_on_cpu(cfg: TrainConfig) -> bool:
    # ACCELERATE_USE_CPU is the launcher's CPU switch (not a rank variable): honour it like Accelerator does.
    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return cfg.cpu or forced or not torch.cuda.is_available()
