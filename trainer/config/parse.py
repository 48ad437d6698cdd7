"""A run's settings from its command line, an optional YAML file and, on --resume, its own config.yaml.

The CLI is generated from the dataclass fields (``batch_size`` -> ``--batch-size``), so a
setting exists in exactly one place with its unit in its comment. Precedence, lowest first:
field default < the run's own RUN/config.yaml (only with ``--resume``) < ``--config FILE``
(YAML) < command line. Everything is validated (config.validate) before any process builds a model or
reads a shard, and every error names the flag (and the YAML file when the value came from
there) together with what to do about it.

``python -m trainer.config ARGS...`` checks ARGS exactly like the trainer and prints the
resolved settings as YAML (exit 0) or one ``error: ...`` line on stderr (exit 2); launch.sh
runs it once before starting N processes that would each print the same error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from trainer.config.fields import FROZEN_ON_RESUME, FROZEN_WITH_SCHEDULE, TrainConfig, as_dict, flag, scalar_type
from trainer.config.validate import REQUIRED, validate, where
from trainer.config.yaml_files import read_run_record, read_yaml, run_settings
from trainer.faults.exits import ConfigError
from trainer.faults.usage import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    """argparse parser generated from TrainConfig; defaults are None so YAML can fill the gaps.

    A malformed flag (``--epochs abc``) raises ConfigError naming it; ``--help`` still exits 0.
    """
    # One ConfigError line instead of the 15-line usage block argparse prints on every process.
    parser = OneLineParser(
        raises=ConfigError,
        prog="trainer/main.py",
        description="Train a multi-label VOC 2007 classifier (run it with `accelerate launch` for DDP).",
        argument_default=None,
    )
    required = parser.add_argument_group("required")  # argparse cannot require them: --resume supplies --shards
    for f in dataclasses.fields(TrainConfig):
        kind, meta = scalar_type(f), f.metadata
        help_text = meta["help"] if f.default is None else f"{meta['help']} (default: {f.default})"
        group = required if f.name in REQUIRED else parser
        if kind is bool:
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            # metavar None lets argparse show the choices, e.g. {sgd,adam,adamw}
            group.add_argument(flag(f.name), dest=f.name, type=kind, choices=meta["choices"],
                               metavar=None if meta["choices"] else f.name.upper(), help=help_text)
    return parser


def parse_config(argv: list[str] | None = None, *, check_in_use: bool = False) -> TrainConfig:
    """Command line (+ optional YAML, + the run's own settings on --resume) -> validated TrainConfig.

    Raises ConfigError on a bad or malformed value, and on --resume when a setting the checkpoint
    fixes (FROZEN_ON_RESUME) differs from the run's RUN/config.yaml. check_in_use: see validate.
    """
    return parse_run(argv, check_in_use=check_in_use)[0]


def parse_run(argv: list[str] | None = None, *, check_in_use: bool = False) -> tuple[TrainConfig, dict]:
    """parse_config, and the run's config.yaml as --resume found it ({} otherwise): the one read of
    that file at a start (the trainer takes the world size and earlier SLURM starts from it)."""
    cli = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    from_yaml = read_yaml(cli["config"]) if cli.get("config") else {}
    chosen = {**from_yaml, **cli}
    record = read_run_record(chosen["out"]) if chosen.get("resume") and chosen.get("out") else {}
    saved, saved_path = run_settings(record, chosen["out"]) if record else ({}, None)
    cfg = TrainConfig(**{**saved, **chosen})
    sources = {name: saved_path for name in set(saved) - set(chosen)}
    sources |= {name: cfg.config for name in set(from_yaml) - set(cli)}
    validate(cfg, sources, check_in_use=check_in_use)
    if saved_path:
        _check_unchanged(cfg, saved, saved_path, sources)
    return cfg, record


def _check_unchanged(cfg: TrainConfig, saved: dict, saved_path: str, sources: dict[str, str]) -> None:
    frozen = FROZEN_ON_RESUME + (FROZEN_WITH_SCHEDULE if cfg.schedule != "none" else ())
    for name in frozen:
        if name in saved and getattr(cfg, name) != saved[name]:
            raise ConfigError(
                f"{where(name, sources)}: {getattr(cfg, name)!r} differs from {saved[name]!r} in {saved_path}, "
                f"and --resume cannot change it (the checkpoint and history depend on it); drop the setting "
                f"to continue the run, or start a new --out to train with the new value")


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.config ARGS``: validate like the trainer, print the resolved settings."""
    try:
        cfg = parse_config(argv, check_in_use=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(as_dict(cfg), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
