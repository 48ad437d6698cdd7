"""The loss and optimization flags at the config layer: refusals naming the flag, YAML forms, and
that a resumed run inherits them and cannot change them (fast, no training)."""

import dataclasses

import pytest

from cli_in_process import run_module
from shards.classes import VOC
from trainer.config import ConfigError, TrainConfig, as_dict, parse_config
from trainer.config.fields import FROZEN_ON_RESUME, lr_step_epochs
from trainer.rundir.provenance import run_config_text

# Every flag of the loss and optimization recipe, at a value other than its default.
RECIPE = ["--loss", "asl", "--asl-gamma-neg", "2", "--asl-gamma-pos", "1", "--asl-clip", "0.1",
          "--label-smoothing", "0.1", "--head-lr-scale", "10", "--no-decay-norm-bias", "--clip-grad-norm", "1",
          "--schedule", "step", "--lr-steps", "1,2", "--lr-gamma", "0.5", "--epochs", "3"]
NEW_FIELDS = ("asl_gamma_neg", "asl_gamma_pos", "asl_clip", "label_smoothing", "head_lr_scale", "decay_norm_bias",
              "clip_grad_norm", "sync_bn", "lr_steps", "lr_gamma")


@pytest.fixture
def base(shards_dir, tmp_path):
    return ["--shards", str(shards_dir), "--out", str(tmp_path / "run")]


def test_the_recipe_flags_parse_and_default_to_todays_recipe(base):
    cfg = parse_config(base + RECIPE)
    assert (cfg.loss, cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, cfg.label_smoothing) == ("asl", 2, 1, 0.1, 0.1)
    assert (cfg.head_lr_scale, cfg.decay_norm_bias, cfg.clip_grad_norm) == (10, False, 1)
    assert (cfg.schedule, lr_step_epochs(cfg), cfg.lr_gamma) == ("step", (1, 2), 0.5)
    default = parse_config(base)
    assert (default.head_lr_scale, default.decay_norm_bias, default.clip_grad_norm, default.sync_bn,
            default.label_smoothing, default.lr_steps, lr_step_epochs(default)) == (1, True, 0, False, 0, None, ())


@pytest.mark.parametrize("argv, message", [
    (["--asl-gamma-neg", "2"], r"^--asl-gamma-neg: is a setting of --loss asl \(the loss is multilabel_soft_margin\)"),
    (["--loss", "asl", "--asl-clip", "1"], r"^--asl-clip: must be in \[0, 1\)"),
    (["--loss", "asl", "--asl-gamma-pos", "-1"], r"^--asl-gamma-pos: must be >= 0"),
    (["--label-smoothing", "0.1"], r"^--label-smoothing: needs --loss bce .* or asl$"),
    (["--loss", "bce", "--label-smoothing", "1"], r"^--label-smoothing: must be in \[0, 1\)"),
    (["--loss", "asl", "--pos-weight", "auto"], r"^--pos-weight: positive weights need --loss bce"),
    (["--head-lr-scale", "0"], r"^--head-lr-scale: must be > 0"),
    (["--clip-grad-norm", "-1"], r"^--clip-grad-norm: must be >= 0"),
    (["--sync-bn", "--cpu"], r"^--sync-bn: SyncBatchNorm needs GPUs \(NCCL\); drop --sync-bn on a CPU run$"),
    (["--lr-steps", "3"], r"^--lr-steps: is part of --schedule step"),
    (["--lr-gamma", "0.5"], r"^--lr-gamma: is part of --schedule step"),
    (["--schedule", "step"], r"^--lr-steps: --schedule step needs the epochs"),
    (["--schedule", "step", "--lr-steps", "5,3"], r"^--lr-steps: '5,3': give increasing epochs between 1 and"),
    (["--schedule", "step", "--lr-steps", "3,20", "--epochs", "20"], r"^--lr-steps: '3,20': .* --epochs - 1 \(19\)"),
    (["--schedule", "step", "--lr-steps", "0"], r"^--lr-steps: '0': give increasing epochs"),
    (["--schedule", "step", "--lr-steps", "1.5"], r"^--lr-steps: '1.5': give whole epochs, comma-separated"),
    (["--schedule", "step", "--lr-steps", "2", "--lr-gamma", "0"], r"^--lr-gamma: must be in \(0, 1\]"),
])
def test_bad_recipe_value_is_refused_naming_the_flag(base, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(base + argv)


def test_a_refusal_is_one_line_and_exit_2_before_launch(base, capsys):
    code, out, err = run_module("trainer.config", [*base, "--sync-bn", "--cpu"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["error: --sync-bn: SyncBatchNorm needs GPUs (NCCL); drop --sync-bn on a CPU run"]


def test_warmup_goes_with_the_step_schedule_too(base):
    cfg = parse_config(base + ["--schedule", "step", "--lr-steps", "3", "--warmup-epochs", "0.5", "--epochs", "4"])
    assert cfg.warmup_epochs == 0.5


def test_lr_steps_in_yaml_as_one_number_or_a_list_string(base, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule: step\nlr_steps: 2\nepochs: 4\n")
    assert lr_step_epochs(parse_config(base + ["--config", str(path)])) == (2,)
    path.write_text("schedule: step\nlr_steps: 1,3\nepochs: 4\n")
    assert lr_step_epochs(parse_config(base + ["--config", str(path)])) == (1, 3)


def test_every_recipe_field_is_frozen_on_resume():
    assert set(NEW_FIELDS) <= set(FROZEN_ON_RESUME)
    assert set(NEW_FIELDS) <= {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.fixture
def saved_recipe_run(shards_dir, tmp_path):
    """A run directory whose config.yaml the trainer's own writer wrote, with every recipe flag set."""
    run = tmp_path / "recipe_run"
    run.mkdir()
    settings = parse_config(["--shards", str(shards_dir), "--out", str(run), *RECIPE])
    (run / "config.yaml").write_text(run_config_text(as_dict(settings), world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    return run


def test_resume_inherits_the_recipe_flags(shards_dir, saved_recipe_run):
    cfg = parse_config(["--out", str(saved_recipe_run), "--resume"])
    fresh = parse_config(["--shards", str(shards_dir), "--out", str(saved_recipe_run / "x"), *RECIPE])
    assert {name: getattr(cfg, name) for name in NEW_FIELDS} == {name: getattr(fresh, name) for name in NEW_FIELDS}


@pytest.mark.parametrize("extra, message", [
    (["--asl-gamma-neg", "4"], r"^--asl-gamma-neg: 4\.0 differs from 2\.0 in .*recipe_run/config\.yaml"),
    (["--label-smoothing", "0"], r"^--label-smoothing: 0\.0 differs from 0\.1"),
    (["--head-lr-scale", "1"], r"^--head-lr-scale: 1\.0 differs from 10\.0"),
    (["--decay-norm-bias"], r"^--decay-norm-bias: True differs from False"),
    (["--clip-grad-norm", "0"], r"^--clip-grad-norm: 0\.0 differs from 1\.0"),
    (["--lr-steps", "2"], r"^--lr-steps: '2' differs from '1,2'"),
    (["--lr-gamma", "0.1"], r"^--lr-gamma: 0\.1 differs from 0\.5"),
])
def test_resume_refuses_to_change_a_recipe_flag(saved_recipe_run, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(["--out", str(saved_recipe_run), "--resume", *extra])


def test_a_run_recorded_before_these_flags_resumes_with_their_defaults(shards_dir, tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    settings = {k: v for k, v in as_dict(parse_config(["--shards", str(shards_dir), "--out", str(run)])).items()
                if k not in NEW_FIELDS}
    (run / "config.yaml").write_text(run_config_text(settings, world_size=1, device="cpu", resumed_from=None,
                                                     classes=VOC))
    cfg = parse_config(["--out", str(run), "--resume"])
    assert all(getattr(cfg, name) == getattr(TrainConfig(), name) for name in NEW_FIELDS)
