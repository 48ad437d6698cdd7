"""RUN/config.yaml records the scheduler's facts of every start under SLURM (trainer.rundir.provenance)."""

from __future__ import annotations

import yaml

from shards.classes import VOC
from trainer.config.yaml_files import read_run_record
from trainer.rundir.provenance import run_config_text

SETTINGS = {"model": "vocnet", "epochs": 2}


def record(run_dir) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def write_run_config(run_dir, settings: dict, **facts) -> None:
    """What a start writes: config.yaml from the settings, the start's facts and the record it found."""
    text = run_config_text(settings, **facts, classes=VOC, earlier=read_run_record(run_dir))
    (run_dir / "config.yaml").write_text(text)


def test_each_slurm_start_is_listed_with_job_id_nodes_and_restart_count(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)  # SLURM sets it only after a requeue
    write_run_config(tmp_path, SETTINGS, world_size=16, device="cuda:0", resumed_from=None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    write_run_config(tmp_path, SETTINGS, world_size=16, device="cuda:0", resumed_from="run/checkpoints/epoch_0003")

    starts = record(tmp_path)["slurm"]
    assert [{k: s[k] for k in ("job_id", "nodes", "restart_count", "resumed_from")} for s in starts] == [
        {"job_id": "4242", "nodes": "gpu[01-02]", "restart_count": 0, "resumed_from": None},
        {"job_id": "4242", "nodes": "gpu[01-02]", "restart_count": 1, "resumed_from": "run/checkpoints/epoch_0003"},
    ]
    assert all(s["started"] for s in starts)
    assert record(tmp_path)["resumed_from"] == "run/checkpoints/epoch_0003"


def test_a_start_outside_slurm_adds_nothing_and_keeps_the_earlier_starts(tmp_path, monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    write_run_config(tmp_path, SETTINGS, world_size=1, device="cpu", resumed_from=None)
    assert "slurm" not in record(tmp_path)

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n1")
    write_run_config(tmp_path, SETTINGS, world_size=1, device="cpu", resumed_from=None)
    monkeypatch.delenv("SLURM_JOB_ID")  # resumed on a workstation
    write_run_config(tmp_path, SETTINGS, world_size=1, device="cpu", resumed_from="x")
    assert [s["job_id"] for s in record(tmp_path)["slurm"]] == ["7"]
