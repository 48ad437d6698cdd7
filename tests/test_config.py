"""TrainConfig: flags, YAML precedence, and refusal of bad settings naming the flag (fast, no training)."""

from pathlib import Path

import pytest
import yaml

from trainer.config import ConfigError, TrainConfig, parse_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


@pytest.fixture
def base(shards_dir, tmp_path):
    """The two required flags, pointing at real shards and a fresh run directory."""
    return ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]


def write_yaml(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_flags_are_spelled_with_dashes_and_typed(base):
    cfg = parse_config(base + ["--batch-size", "8", "--epochs", "3", "--lr", "0.5", "--optimizer", "adamw",
                               "--mixed-precision", "bf16", "--grad-accum", "2", "--channels-last", "--seed", "7"])
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.optimizer) == (8, 3, 0.5, "adamw")
    assert (cfg.mixed_precision, cfg.grad_accum, cfg.channels_last, cfg.seed) == ("bf16", 2, True, 7)
    assert parse_config(base).batch_size == TrainConfig().batch_size  # defaults untouched


def test_cli_wins_over_yaml_and_yaml_over_defaults(base, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"epochs": 3, "lr": 0.1, "optimizer": "adam", "batch-size": 4,
                                            "channels_last": True})
    cfg = parse_config(base + ["--config", path, "--lr", "0.5", "--no-channels-last"])
    assert (cfg.epochs, cfg.optimizer, cfg.batch_size) == (3, "adam", 4)  # from YAML (dash or underscore keys)
    assert (cfg.lr, cfg.channels_last) == (0.5, False)  # CLI wins
    assert cfg.config == path


def test_unknown_yaml_key_is_named_with_a_suggestion(base, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"bacth_size": 4})
    with pytest.raises(ConfigError, match=r"unknown key 'bacth_size'.*batch_size"):
        parse_config(base + ["--config", path])


def test_bad_yaml_value_names_flag_and_file(base, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match=r"--optimizer \(from .*c\.yaml\): 'rmsprop' is not one of sgd, adam, adamw"):
        parse_config(base + ["--config", path])
    path = write_yaml(tmp_path / "d.yaml", {"epochs": "many"})
    with pytest.raises(ConfigError, match=r"--epochs \(from .*d\.yaml\): expected int"):
        parse_config(base + ["--config", path])


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], r"--model: unknown model 'nope'; known: .*simple"),
    (["--mixed-precision", "fp16", "--cpu"], r"--mixed-precision: fp16 needs a GPU"),
    (["--epochs", "0"], r"--epochs: must be >= 1"),
    (["--batch-size", "0"], r"--batch-size: must be >= 1"),
    (["--lr", "-1"], r"--lr: must be > 0"),
    (["--momentum", "1.5"], r"--momentum: must be in \[0, 1\)"),
    (["--pos-weight", "auto"], r"--pos-weight: positive weights need --loss bce"),
    (["--warmup-epochs", "1"], r"--warmup-epochs: warm-up is part of --schedule cosine"),
    (["--schedule", "cosine", "--warmup-epochs", "50", "--epochs", "5"], r"--warmup-epochs: must be in \[0, --epochs=5\)"),
    (["--weights", "/no/such.pth"], r"--weights: no such file"),
])
def test_bad_value_is_refused_naming_the_flag(base, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(base + argv)


def test_missing_or_unpacked_shards_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--shards: is required"):
        parse_config(["--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match=r"--shards: .*has no manifest.json; make one with `python -m shards.pack"):
        parse_config(["--shards", str(tmp_path), "--out", str(tmp_path / "run")])


def test_malformed_flag_exits_with_usage_naming_it(base, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(base + ["--epochs", "abc"])
    assert exit_info.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_fresh_run_never_overwrites_a_run_with_checkpoints(shards_dir, tmp_path):
    (tmp_path / "run" / "checkpoints" / "epoch_0001").mkdir(parents=True)
    argv = ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]
    with pytest.raises(ConfigError, match=r"--out: .*already holds checkpoints.*--resume"):
        parse_config(argv)
    assert parse_config(argv + ["--resume"]).resume


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS])
def test_every_shipped_config_is_valid(base, path):
    cfg = parse_config(base + ["--config", str(path)])
    assert cfg.config == str(path)
