"""TrainConfig: flags, YAML precedence, resume settings, and refusal of bad settings naming the flag (fast, no training)."""

from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cli_in_process import run_module
from models.torchvision_zoo import default_weights
from shards.classes import VOC
from models import list_models
from shards.pack import PackOptions, pack
from shards.synth import generate
from trainer.config import ConfigError, TrainConfig, as_dict, parse_config
from trainer.rundir.provenance import run_config_text

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# Every trainer recipe shipped (suites.yaml lists runs, it is not one: tests/test_suite_config.py checks it).
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.name != "suites.yaml")


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
    (["--model", "vocnt"], r"--model: unknown model 'vocnt'; did you mean 'vocnet'\?"),
    (["--weight-decay", "nan"], r"--weight-decay: must be a finite number, got nan"),
    (["--mixed-precision", "fp16", "--cpu"], r"--mixed-precision: fp16 needs a GPU"),
    (["--epochs", "0"], r"--epochs: must be >= 1"),
    (["--batch-size", "0"], r"--batch-size: must be >= 1"),
    (["--lr", "-1"], r"--lr: must be > 0"),
    (["--momentum", "1.5"], r"--momentum: must be in \[0, 1\)"),
    (["--pos-weight", "auto"], r"--pos-weight: positive weights need --loss bce"),
    (["--warmup-epochs", "1"], r"--warmup-epochs: warm-up is part of --schedule cosine"),
    (["--schedule", "cosine", "--warmup-epochs", "50", "--epochs", "5"], r"--warmup-epochs: must be in \[0, --epochs=5\)"),
    (["--weights", "/no/such.pth"], r"--weights: no such file"),
    (["--loader", "gpu"], r"--loader: invalid choice: 'gpu' \(choose from 'auto', 'stream', 'device'\)"),
    (["--train-splits", "train,test"], r"^--train-splits: 'train,test': give train or val or both, comma-separated "
                                       r"\(test is what the run is scored on\), e.g. train,val$"),
    (["--train-splits", "train,train"], r"--train-splits: 'train,train': .*\(each split once\)"),
    (["--train-splits", "train,val"], r"^--val-split: val is also trained on \(--train-splits train,val\): .*"
                                      r"give --val-split none \(the final model is tested\)$"),
    (["--val-split", "none", "--test-with", "best"], r"--test-with: best needs a validation split"),
    (["--val-split", "test"], r"--val-split: invalid choice: 'test' \(choose from 'val', 'none'\)"),
])
def test_bad_value_is_refused_naming_the_flag(base, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(base + argv)


def test_missing_or_unpacked_shards_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--shards: is required"):
        parse_config(["--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match=r"--shards: .*has no manifest.json; give the --out of `python -m shards.pack"):
        parse_config(["--shards", str(tmp_path), "--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match=r"--shards: no such directory .*typo"):
        parse_config(["--shards", str(tmp_path / "typo"), "--out", str(tmp_path / "run")])
    # A VOC folder given as --shards: the hint packs it, into a folder of its own.
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"it is a VOC folder, not shards; pack it first with "
                                          r"`python -m shards.pack --voc .*VOCdevkit --out SHARDS_DIR`"):
        parse_config(["--shards", str(tmp_path / "VOCdevkit"), "--out", str(tmp_path / "run")])


def test_malformed_flag_is_one_error_naming_it(base):
    with pytest.raises(ConfigError, match=r"^--epochs: invalid int value: 'abc' \(see --help\)$"):
        parse_config(base + ["--epochs", "abc"])


def test_yaml_scientific_notation_is_a_float(base, tmp_path):
    # PyYAML (YAML 1.1) reads `3e-3` without a dot as the string '3e-3'.
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3e-3\nweight_decay: 5E-4\nwarmup_epochs: 1\nschedule: cosine\n")
    cfg = parse_config(base + ["--config", str(path)])
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_epochs) == (0.003, 0.0005, 1.0)
    path.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"--lr \(from .*c\.yaml\): expected float, got 'fast'"):
        parse_config(base + ["--config", str(path)])
    path.write_text("epochs: true\n")
    with pytest.raises(ConfigError, match=r"--epochs \(from .*c\.yaml\): expected int, got True"):
        parse_config(base + ["--config", str(path)])


def test_malformed_yaml_names_file_and_line(base, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nmodel: [vocnet\n")
    with pytest.raises(ConfigError, match=r"--config .*c\.yaml: not valid YAML at line 3, column 1: "
                                          r"expected ',' or ']'.*opened at line 2"):
        parse_config(base + ["--config", str(path)])


def test_fresh_run_never_overwrites_a_run_with_checkpoints(shards_dir, tmp_path):
    (tmp_path / "run" / "checkpoints" / "epoch_0001").mkdir(parents=True)
    argv = ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]
    with pytest.raises(ConfigError, match=r"--out: .*already holds checkpoints.*--resume"):
        parse_config(argv)
    assert parse_config(argv + ["--resume"]).resume


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS])
def test_every_shipped_config_is_valid(base, path, tmp_path, monkeypatch):
    recipe = yaml.safe_load(path.read_text())
    if recipe.get("pretrained"):  # the pre-launch check looks for the ImageNet file where torchvision keeps it
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / Path(default_weights(recipe["model"]).url).name).touch()
    cfg = parse_config(base + ["--config", str(path)])
    assert cfg.config == str(path)


@pytest.fixture
def saved_run(shards_dir, tmp_path):
    """A run directory whose config.yaml was written by the trainer's own writer, with non-default settings."""
    run = tmp_path / "saved_run"
    run.mkdir()
    settings = parse_config(["--shards", str(shards_dir), "--out", str(run), "--model", "vocnet", "--lr", "3e-3",
                             "--optimizer", "adam", "--batch-size", "8", "--epochs", "3", "--workers", "0"])
    (run / "config.yaml").write_text(run_config_text(as_dict(settings), world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    return run


def test_resume_continues_with_the_runs_own_settings(shards_dir, saved_run, tmp_path):
    argv = ["--shards", str(shards_dir), "--out", str(saved_run), "--resume"]
    cfg = parse_config(argv)
    assert (cfg.model, cfg.lr, cfg.optimizer, cfg.batch_size, cfg.epochs, cfg.workers) == ("vocnet", 3e-3, "adam", 8, 3, 0)
    assert (cfg.out, cfg.config, cfg.resume) == (str(saved_run), None, True)
    assert parse_config(["--out", str(saved_run), "--resume"]).shards == str(shards_dir)  # saved too
    # Precedence: saved < --config YAML < command line, for settings a resume may change.
    path = write_yaml(tmp_path / "c.yaml", {"epochs": 5, "workers": 1, "test_frequency": 2})
    cfg = parse_config(argv + ["--config", path, "--workers", "2", "--lr", "0.003"])
    assert (cfg.epochs, cfg.workers, cfg.test_frequency, cfg.model, cfg.lr) == (5, 2, 2, "vocnet", 3e-3)
    # No config.yaml yet (the run never started): --resume is a fresh start with the usual defaults.
    assert parse_config(["--shards", str(shards_dir), "--out", str(tmp_path / "new"), "--resume"]).model == "final"


@pytest.mark.parametrize("extra, message", [
    (["--lr", "5"], r"^--lr: 5\.0 differs from 0\.003 in .*saved_run/config\.yaml.*start a new --out"),
    (["--model", "simple"], r"^--model: 'simple' differs from 'vocnet'"),
    (["--batch-size", "4"], r"^--batch-size: 4 differs from 8"),
    (["--seed", "1"], r"^--seed: 1 differs from 0"),
    (["--mixup", "0.2"], r"^--mixup: 0\.2 differs from 0\.0"),
    (["--random-erasing", "0.25"], r"^--random-erasing: 0\.25 differs from 0\.0"),
])
def test_resume_refuses_to_change_what_the_checkpoint_fixes(shards_dir, saved_run, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(["--shards", str(shards_dir), "--out", str(saved_run), "--resume"] + extra)


def test_resume_names_the_yaml_that_changed_a_fixed_setting(shards_dir, saved_run, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"optimizer": "sgd"})
    with pytest.raises(ConfigError, match=r"^--optimizer \(from .*c\.yaml\): 'sgd' differs from 'adam'"):
        parse_config(["--shards", str(shards_dir), "--out", str(saved_run), "--resume", "--config", path])


def test_resume_under_a_schedule_keeps_its_length(shards_dir, tmp_path):
    run = tmp_path / "cosine_run"
    run.mkdir()
    argv = ["--shards", str(shards_dir), "--out", str(run)]
    settings = parse_config(argv + ["--schedule", "cosine", "--epochs", "4"])
    (run / "config.yaml").write_text(run_config_text(as_dict(settings), world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    assert parse_config(argv + ["--resume"]).epochs == 4
    with pytest.raises(ConfigError, match=r"^--epochs: 6 differs from 4"):
        parse_config(argv + ["--resume", "--epochs", "6"])


def test_resume_refuses_a_damaged_run_config(shards_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("settings: {lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"^--resume: .*run/config\.yaml: not valid YAML at line"):
        parse_config(["--shards", str(shards_dir), "--out", str(run), "--resume"])


def test_config_module_prints_resolved_settings_or_one_error_line(base, capsys):
    # `python -m trainer.config` (what launch.sh runs), in this process: tests/cli_in_process.py
    code, out, err = run_module("trainer.config", [*base, "--lr", "3e-3", "--model", "simple"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out) == as_dict(parse_config(base + ["--lr", "3e-3", "--model", "simple"]))
    code, out, err = run_module("trainer.config", [*base, "--model", "vocnt", "--epochs", "2"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: --model: unknown model 'vocnt'; did you mean 'vocnet'? "
                                f"known: {', '.join(list_models())}; and "
                                "timm/NAME for timm's networks"]


def _pack_hiding(tmp_path: Path, split: str) -> Path:
    """Real shards whose `split` was packed without annotations (labels hidden)."""
    voc = generate(tmp_path / "VOCdevkit", {"train": 2, "val": 2, "test": 2}, seed=0, backgrounds_dir=None,
                   hidden={split})
    pack([voc], tmp_path / "shards", PackOptions(), Console(quiet=True))
    return tmp_path / "shards"


@pytest.mark.parametrize("split", ["train", "val"])
def test_unlabeled_train_or_val_split_is_refused(tmp_path, split, capsys):
    shards = _pack_hiding(tmp_path, split)
    with pytest.raises(ConfigError, match=rf"--shards: split '{split}' of .* was packed without annotations"):
        parse_config(["--shards", str(shards), "--out", str(tmp_path / "run")])
    if split == "val":  # what launch.sh runs before starting processes: one line, exit 2
        code, out, err = run_module("trainer.config", ["--shards", shards, "--out", tmp_path / "run"], capsys)
        assert (code, out) == (2, "")
        assert len(err.splitlines()) == 1
        assert err.startswith(f"error: --shards: split 'val' of {shards} was packed without annotations")


def test_trainval_without_selection_is_accepted_and_needs_no_val_labels(tmp_path):
    shards = _pack_hiding(tmp_path, "val")
    cfg = parse_config(["--shards", str(shards), "--out", str(tmp_path / "run"), "--val-split", "none"])
    assert (cfg.train_splits, cfg.val_split) == ("train", "none")  # val hidden: not read, so not refused
    with pytest.raises(ConfigError, match=r"--shards: split 'val' of .* was packed without annotations"):
        parse_config(["--shards", str(shards), "--out", str(tmp_path / "run2"), "--train-splits", "train,val",
                      "--val-split", "none"])


def test_unlabeled_test_split_is_accepted(tmp_path):
    shards = _pack_hiding(tmp_path, "test")
    assert parse_config(["--shards", str(shards), "--out", str(tmp_path / "run")]).shards == str(shards)


def test_a_model_that_cannot_take_the_image_size_is_refused_before_launch(base, capsys):
    code, out, err = run_module("trainer.config", [*base, "--model", "simple", "--image-size", "64"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["error: --model simple --image-size 64: model 'simple' cannot take 64x64 images; "
                                "it takes 224 to 231 only (smallest 224)"]
    # Pretrained models are checked on their layers only: no weights file needed (none is on this box).
    with pytest.raises(ConfigError, match=r"--model alexnet_pretrained --image-size 40: .*smallest size it takes is 63"):
        parse_config(base + ["--model", "alexnet_pretrained", "--image-size", "40"])
    assert parse_config(base + ["--model", "vocnet", "--image-size", "32"]).image_size == 32
