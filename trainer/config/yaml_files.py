"""The YAML layers of a run's settings: a --config file, and a run's own config.yaml on --resume.

Keys may use dashes or underscores; an unknown key (with a did-you-mean) or a wrongly typed
value is a ConfigError naming the file, as is a file that is not YAML (with its line).
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from trainer.faults.exits import ConfigError
from trainer.rundir.layout import CONFIG
from trainer.config.fields import NOT_INHERITED, TrainConfig, flag, scalar_type



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
        values[name] = _coerce(name, scalar_type(fields[name]), value, source)
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
    # `lr_steps: 10` (one epoch) is an int to YAML; its comma-separated form is a string.
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # bool is an int subclass, but `epochs: true` is a mistake, not 1.
    if (isinstance(value, kind) or (kind is float and isinstance(value, int))) and \
            (kind is bool or not isinstance(value, bool)):
        return kind(value)
    raise ConfigError(f"{flag(name)} (from {source}): expected {kind.__name__}, got {value!r}")


def read_yaml(path: str) -> dict:
    """The --config file as {field: value}."""
    if not Path(path).is_file():
        raise ConfigError(f"--config: no such file {path}")
    raw = _load_yaml(Path(path), f"--config {path}") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of setting: value, got {type(raw).__name__}")
    return _typed(raw, f"--config {path}", path)


def read_run_record(run_dir: str | Path) -> dict:
    """RUN/config.yaml ({settings, world_size, device, resumed_from, git, versions, slurm}) as
    trainer.rundir.provenance wrote it, {} when there is none: the one reader of that file."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    label = f"--resume: {path}"
    record = _load_yaml(path, label)
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ConfigError(f"{label}: has no 'settings' mapping; it is not a run's config.yaml "
                          "(restore it, or start a new --out)")
    return record


def run_settings(record: dict, run_dir: str | Path) -> tuple[dict, str]:
    """The settings a run recorded (`record`: its config.yaml), minus where-to-read/write, and the file's path."""
    path = str(Path(run_dir) / CONFIG)
    settings = {k: v for k, v in record["settings"].items() if str(k).replace("-", "_") not in NOT_INHERITED}
    return _typed(settings, f"--resume: {path}", path), path
