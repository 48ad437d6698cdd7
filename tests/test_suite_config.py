"""trainer.suite and trainer.report without training: the suites file, the report's figures against
docs/SPEC.md, which flags a recipe refuses, and bad input (one `error:` line, exit status 2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from trainer.report.reference import REFERENCE
from trainer.suite.catalog import SuiteError, load_suites, recipe_changes

ROOT = Path(__file__).resolve().parent.parent
REPORT_RECIPES = ROOT / "configs" / "report"


def test_list_shows_every_suite_with_its_runs_and_recipes(capsys) -> None:
    from trainer.suite.cli import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    suites = load_suites()
    assert list(suites) == ["report", "part1a", "ablation", "ours", "papers"]
    assert len(suites["report"].runs) == 9
    included = (*suites["part1a"].runs, *suites["ablation"].runs)
    assert [r.name for r in suites["report"].runs] == [r.name for r in included] + ["final"]
    for suite in suites.values():
        assert re.search(rf"^{suite.name}  \S", out, re.M)
        for run in suite.runs:
            assert re.search(rf"^  {run.name} +configs/{run.recipe.parent.name}/{run.recipe.name}$", out, re.M)
    # every YAML of configs/report is a run of the report suite, every one of configs/papers of papers
    assert sorted(r.recipe for r in suites["report"].runs) == sorted(REPORT_RECIPES.glob("*.yaml"))
    assert sorted(r.recipe for r in suites["papers"].runs) == sorted((ROOT / "configs" / "papers").glob("*.yaml"))


def test_reference_figures_are_spec_s_and_name_the_report_suite_s_runs() -> None:
    spec = (ROOT / "docs" / "SPEC.md").read_text()
    assert [ref.run for ref in REFERENCE] == [run.name for run in load_suites()["report"].runs]
    for ref in REFERENCE:
        assert re.search(rf"^\|[^\n]*\| {re.escape(ref.figure)} \|$", spec, re.M), ref


def test_a_recipe_refuses_flags_that_change_its_kind_not_its_length_or_runtime() -> None:
    basenet, adam = REPORT_RECIPES / "ablation_1_basenet.yaml", REPORT_RECIPES / "ablation_2_adam.yaml"
    assert recipe_changes(basenet, {"optimizer": "adam"}) == {"optimizer": ("sgd", "adam")}
    assert recipe_changes(adam, {"optimizer": "adam"}) == {}  # what the recipe says already
    changes = recipe_changes(basenet, {"batch_size": 100, "augment": "crop_flip", "image_size": 128, "lr": 0.1})
    assert changes == {"batch_size": (50, 100), "augment": ("none", "crop_flip"), "image_size": (227, 128),
                       "lr": (0.01, 0.1)}
    free = {"epochs": 1, "workers": 0, "seed": 5, "mixed_precision": "bf16", "test_frequency": 1, "debug": True,
            "channels_last": True, "weights": "w.pth"}
    assert recipe_changes(basenet, free) == {}


def test_recipe_changing_flag_is_refused_for_each_run_and_nothing_starts(shards_dir, tmp_path, capsys) -> None:
    from trainer.suite.cli import main

    runs = tmp_path / "runs"
    assert main(["part1a", "--shards", str(shards_dir), "--runs", str(runs), "--lr", "0.1", "--epochs", "1"]) == 1
    out = capsys.readouterr().out
    for name in ("simple", "alexnet", "alexnet_pretrained"):
        assert (f"{name}: refused: --lr would change the recipe of configs/report/{name}.yaml (lr 0.01 -> 0.1); "
                "pass --allow-recipe-change to run it anyway") in out
    assert "0 of 3 runs finished; 3 refused" in out
    assert not runs.exists()


@pytest.mark.parametrize("args, says", [
    (["nope"], "unknown suite 'nope'"),
    ([], "name a suite"),
    (["report", "--runs", "{runs}"], "--shards is required"),
    (["report", "--shards", "{shards}"], "--runs is required"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--out", "x"], "--out: the suite sets --config, --out"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--epochs", "abc"], "--epochs: invalid int value: 'abc'"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--no-such-flag"], "unrecognized arguments: --no-such"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--parallel", "0"], "--parallel must be >= 1"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--per-gpu", "0"], "--per-gpu must be >= 1, got 0"),
    (["report", "--shards", "/no/such/dir", "--runs", "{runs}"], "--shards: no such directory /no/such/dir"),
    (["report", "--shards", "{shards}", "--runs", "{runs}", "--suites", "/no/such.yaml"], "--suites: no such file"),
])
def test_suite_bad_input_is_one_error_line_and_exit_2(args, says, shards_dir, tmp_path, capsys) -> None:
    from trainer.suite.cli import main

    assert main([arg.format(shards=shards_dir, runs=tmp_path / "runs") for arg in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("suites, says", [
    ({"a": {"runs": {"x": "one.yaml"}}, "b": {"runs": {"x": "two.yaml"}}}, "run 'x' is"),
    ({"a": {"include": ["b"], "runs": {}}, "b": {"include": ["a"]}}, "includes itself (a -> b -> a)"),
    ({"a": {"include": ["zz"]}}, "includes unknown suite 'zz'"),
    ({"a": {"runs": {"x": "missing.yaml"}}}, "--config: no such file"),
    ({"a": {"runs": {"x": "bad.yaml"}}}, "unknown key 'modle'; did you mean 'model'?"),
    ({"a": {"runs": {"../x": "one.yaml"}}}, "is not a plain directory name"),
    ({"a": {"runs": {"x": "one.yaml"}, "about": "z", "extra": 1}}, "expected keys about, include, runs"),
])
def test_a_bad_suites_file_names_the_file_and_the_entry(suites, says, tmp_path) -> None:
    for name, text in (("one.yaml", "model: vocnet\n"), ("two.yaml", "model: simple\n"), ("bad.yaml", "modle: x\n")):
        (tmp_path / name).write_text(text)
    path = tmp_path / "suites.yaml"
    path.write_text(yaml.safe_dump(suites))
    with pytest.raises(SuiteError, match=re.escape(says)) as err:
        load_suites(path)
    assert str(path) in str(err.value)


def test_report_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys) -> None:
    from trainer.report.cli import main

    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.csv").write_text("epoch,train_loss\n")
    for args, says in (([str(tmp_path / "gone"), "--out", str(tmp_path / "r.md")], "gone: no such directory"),
                       ([str(tmp_path / "run"), str(tmp_path / "not-a-run"), "--out", str(tmp_path / "r.md")],
                        "not-a-run: not a run directory"),
                       ([str(tmp_path), "--out", str(tmp_path / "r.txt")], "give a markdown file name"),
                       ([str(tmp_path), "--out", str(tmp_path / "r.md"), "--suite", "zz"], "unknown suite 'zz'")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("args, says", [
    (["--sbatch-args", "--time=1:00:00"], "--sbatch-args is for --launcher slurm"),
    (["--launcher", "pbs"], "argument --launcher: invalid choice: 'pbs'"),
    (["--parallel", "0", "--launcher", "slurm"], "--parallel must be >= 1, got 0"),
    (["--per-gpu", "2", "--launcher", "slurm"], "--per-gpu is for --launcher local"),
])
def test_bad_launcher_flags_are_one_line_and_submit_nothing(args, says, shards_dir, tmp_path, capsys) -> None:
    from trainer.suite.cli import main

    runs = tmp_path / "runs"
    assert main(["part1a", "--shards", str(shards_dir), "--runs", str(runs), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not (runs / ".slurm").exists()


def test_slurm_launcher_without_sbatch_says_where_to_run_it(shards_dir, tmp_path, capsys, monkeypatch) -> None:
    from trainer.suite.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # a laptop: no SLURM clients
    runs = tmp_path / "runs"
    assert main(["simple_only", "--suites", str(_one_run_suites(tmp_path)), "--shards", str(shards_dir),
                 "--runs", str(runs), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --launcher slurm: no sbatch on this machine's PATH; run it on a SLURM login node\n", err


def test_status_reads_the_runs_and_takes_no_trainer_flags(tmp_path, capsys) -> None:
    from trainer.suite.cli import main

    suites, runs = _one_run_suites(tmp_path), tmp_path / "runs"
    assert main(["simple_only", "--suites", str(suites), "--runs", str(runs), "--status"]) == 1  # not done
    out = capsys.readouterr().out
    assert "simple" in out and "not started" in out
    assert main(["simple_only", "--suites", str(suites), "--runs", str(runs), "--status", "--epochs", "1"]) == 2
    assert "error: --status takes no trainer flags (--epochs 1)" in capsys.readouterr().err


def _one_run_suites(folder: Path) -> Path:
    path = folder / "suites.yaml"
    path.write_text(f"simple_only:\n  runs:\n    simple: {REPORT_RECIPES / 'simple.yaml'}\n")
    return path


def test_per_gpu_places_up_to_k_experiments_on_each_gpu_spread_over_all_first() -> None:
    from trainer.suite.cli import SuiteError, gpu_devices, gpu_slots

    assert gpu_slots(["0", "1"], 3, per_gpu=2) == ["0", "1", "0"]
    assert gpu_slots(["0"], 4, per_gpu=4) == ["0"] * 4
    assert gpu_slots(["0", "1"], 2, per_gpu=1) == ["0", "1"]  # the default: one experiment per GPU
    with pytest.raises(SuiteError, match=r"--parallel 5: 2 GPU\(s\) visible and --per-gpu 2 allows 4 experiments"):
        gpu_slots(["0", "1"], 5, per_gpu=2)
    assert gpu_devices(3, cpu=True, per_gpu=2) == [None] * 3  # CPU: N processes, as without --per-gpu
