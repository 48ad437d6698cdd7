"""A run's settings: the dataclass (fields), its command line and YAML layers (parse, yaml_files),
and the checks made before any process starts (validate)."""

from trainer.config.fields import TrainConfig, as_dict, flag
from trainer.faults.exits import ConfigError
from trainer.config.parse import build_parser, main, parse_config, validate

__all__ = ["ConfigError", "TrainConfig", "as_dict", "build_parser", "flag", "main", "parse_config", "validate"]
