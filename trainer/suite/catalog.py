"""Suites of experiments as data (configs/suites.yaml), and what a run's recipe fixes.

A suite is an ordered list of runs, each a name (the run's directory under --runs) and a recipe
YAML (the trainer's --config). ``load_suites`` reads the suites file and checks it once: every
recipe exists and parses as trainer settings, an included suite exists, and a run name means the
same recipe in every suite (suites that share a run share its directory).

A recipe's fixed part is what makes it the experiment it is: trailing flags of trainer.suite may
not change it unless --allow-recipe-change (``recipe_changes``). ``differences`` lists every
setting of a run that differs from its recipe file, for trainer.report.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainer.config import build_parser
from trainer.config.yaml_files import read_yaml
from trainer.rundir.provenance import PROJECT_DIR
from trainer.config import ConfigError, TrainConfig
from trainer.config.fields import FROZEN_ON_RESUME

SUITES_FILE = PROJECT_DIR / "configs" / "suites.yaml"

# The recipe: what a resumed run must keep (settings.FROZEN_ON_RESUME: model, optimizer, lr, batch
# size, schedule, loss, augmentation, image size, ...) minus the seed, which draws another sample of
# the same recipe. Epochs are the recipe's length, not its kind: `--epochs 1` is how a smoke pass
# runs a suite; trainer.report shows every run whose epochs (or anything else) differ.
RECIPE_FIELDS: tuple[str, ...] = tuple(name for name in FROZEN_ON_RESUME if name != "seed")
# Where a run reads and writes and how fast it goes, not what it computes: never listed as a difference.
RUNTIME_FIELDS: frozenset[str] = frozenset({
    "shards", "out", "config", "resume", "weights", "workers", "cpu", "channels_last", "log_with",
    "keep_checkpoints", "checkpoint_every_steps"})
# Set per run by trainer.suite itself.
SUITE_SETS: tuple[str, ...] = ("config", "shards", "out", "resume")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SuiteError(ValueError):
    """A suites file or suite name that cannot be used; one line naming the file and entry."""


@dataclass(frozen=True)
class Run:
    name: str  # directory under --runs
    recipe: Path  # absolute path of the recipe YAML


@dataclass(frozen=True)
class Suite:
    name: str
    about: str
    runs: tuple[Run, ...]


def load_suites(path: str | Path = SUITES_FILE) -> dict[str, Suite]:
    """Every suite of the file, in file order, with its runs resolved (includes first)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"--suites: no such file {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict) or not raw:
        raise SuiteError(f"{path}: expected a mapping of suite name -> {{about, include, runs}}")
    recipes: dict[str, Path] = {}  # run name -> recipe, the same in every suite
    own: dict[str, tuple[str, list[Run]]] = {}
    for suite, body in raw.items():
        where = f"{path}: suite '{suite}'"
        if not isinstance(body, dict) or set(body) - {"about", "include", "runs"}:
            raise SuiteError(f"{where}: expected keys about, include, runs")
        runs = []
        for name, recipe in (body.get("runs") or {}).items():
            runs.append(_run(str(name), recipe, path, where, recipes))
        own[str(suite)] = (str(body.get("about", "")), runs)
    suites = {name: Suite(name, about, tuple(_expand(name, raw, own, path, ()))) for name, (about, _) in own.items()}
    for suite in suites.values():
        if not suite.runs:
            raise SuiteError(f"{path}: suite '{suite.name}' has no runs")
    return suites


def _run(name: str, recipe: object, path: Path, where: str, recipes: dict[str, Path]) -> Run:
    if not _NAME.fullmatch(name):
        raise SuiteError(f"{where}: run name '{name}' is not a plain directory name (letters, digits, . _ -)")
    if not isinstance(recipe, str):
        raise SuiteError(f"{where}: run '{name}': expected the path of a recipe YAML, got {recipe!r}")
    file = (path.parent / recipe).resolve()
    try:
        read_yaml(str(file))  # a recipe that cannot parse fails here, naming itself, not mid-suite
    except ConfigError as err:
        raise SuiteError(f"{where}: run '{name}': {err}") from None
    if recipes.setdefault(name, file) != file:
        raise SuiteError(f"{where}: run '{name}' is {file} here but {recipes[name]} in another suite; "
                         "a run name is a directory under --runs and must mean one recipe")
    return Run(name, file)


def _expand(name: str, raw: dict, own: dict, path: Path, seen: tuple[str, ...]) -> list[Run]:
    if name in seen:
        raise SuiteError(f"{path}: suite '{name}' includes itself ({' -> '.join((*seen, name))})")
    runs: list[Run] = []
    for included in raw[name].get("include") or []:
        if included not in own:
            raise SuiteError(f"{path}: suite '{name}' includes unknown suite '{included}'")
        runs += _expand(included, raw, own, path, (*seen, name))
    runs += own[name][1]
    names = [run.name for run in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SuiteError(f"{path}: suite '{name}' lists run(s) {', '.join(twice)} more than once")
    return runs


def given_flags(flags: list[str]) -> dict:
    """The trainer flags given (ConfigError on a malformed or unknown one), as {field: value}."""
    return {k: v for k, v in vars(build_parser().parse_args(flags)).items() if v is not None}


def recipe_settings(recipe: Path) -> TrainConfig:
    """What the recipe file makes of the trainer's defaults (unvalidated: no --shards/--out yet)."""
    return TrainConfig(**read_yaml(str(recipe)))


def recipe_changes(recipe: Path, flags: dict) -> dict[str, tuple[object, object]]:
    """{field: (recipe's value, flag's value)} for every RECIPE_FIELDS flag that changes the recipe."""
    base = recipe_settings(recipe)
    return {name: (getattr(base, name), flags[name]) for name in RECIPE_FIELDS
            if name in flags and flags[name] != getattr(base, name)}


def differences(recipe: Path, settings: dict) -> dict[str, tuple[object, object]]:
    """{field: (recipe's value, run's value)} for every non-runtime setting a run changed."""
    base = recipe_settings(recipe)
    return {f.name: (getattr(base, f.name), settings[f.name]) for f in dataclasses.fields(TrainConfig)
            if f.name not in RUNTIME_FIELDS and f.name in settings and settings[f.name] != getattr(base, f.name)}


def describe_changes(changes: dict[str, tuple[object, object]]) -> str:
    """``lr 0.01 -> 0.1, image_size 227 -> 64``"""
    return ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())


def shown_path(path: str | Path) -> str:
    """A path relative to the project when it lies inside it (configs/report/simple.yaml), else as is."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)
