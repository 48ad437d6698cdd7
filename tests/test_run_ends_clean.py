"""Through the trainer itself: a 2-process run whose --out fills up ends
on both ranks with the disk error named, nothing left half-written; a run refused after its
--out was claimed leaves no empty --out behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from train_helpers import ROOT, TINY, ddp, env, history, kill_launch, run, start, wait_until
from trainer.faults.exits import EXIT_IO
from trainer.main import main
from trainer.rundir.layout import RunDir
from trainer.rundir.lock import RunDirLock


def test_a_refused_one_process_run_leaves_no_empty_out(shards_dir, tmp_path, capsys, monkeypatch):
    garbage = tmp_path / "not-weights.pth"
    garbage.write_bytes(b"not a state dict")
    args = ["--shards", str(shards_dir), "--model", "alexnet_pretrained", "--weights", str(garbage), "--cpu",
            "--epochs", "1"]
    # What --out held right after the claim: the refusal must come after it (build_model runs once the
    # folder is taken), or this test would pass with no folder ever made.
    claimed: list[tuple[Path, bool, bool]] = []
    real_claim = RunDirLock.claim

    def claim(self, accelerator):
        real_claim(self, accelerator)
        claimed.append((self.out, self.out.is_dir(), RunDir(self.out).lock.is_file()))

    monkeypatch.setattr(RunDirLock, "claim", claim)
    out = tmp_path / "new" / "run"  # refused by build_model, after RunDirLock.claim made the folders
    assert main([*args, "--out", str(out)]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    assert claimed == [(out, True, True)]  # the claim made new/run and locked it ...
    assert not (tmp_path / "new").exists()  # ... and the refused run removed both folders it made
    existing = tmp_path / "existing"
    existing.mkdir()  # a folder the user made stays, even empty
    assert main([*args, "--out", str(existing)]) == 2
    assert claimed[1:] == [(existing, True, True)]
    assert existing.is_dir() and not any(existing.iterdir())  # and its lock file is gone


@pytest.mark.slow
def test_a_full_disk_ends_the_run_in_one_line_keeps_the_last_checkpoint_and_it_resumes(shards_dir, tmp_path):
    """Epoch 1 saves on a small tmpfs; then the disk fills up (a file the test writes while rank 0 is
    paused) and epoch 2's saves fail: one line naming the path and "no space left on device", exit 74,
    no .tmp-* left. A --resume before room is made fails the same way and changes nothing; after room
    is made it resumes from epoch 1's checkpoint and trains every epoch exactly once."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    # vocnet's best/ is 14 MB and a checkpoint 43 MB (Adam's state): two checkpoints and best/ fit in 128 MiB.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out, marker, go, log = disk / "run", tmp_path / "paused", tmp_path / "go", tmp_path / "run.log"
        args = ["--shards", str(shards_dir), "--out", str(out), "--epochs", "2", *TINY]
        proc = start(ddp(args, paused=("2:0", marker, go), ours=True), log)
        try:
            wait_until(marker.exists, proc, log)  # epoch 1 and its checkpoint are done
            _fill(disk)
            go.write_text("go")
            proc.wait(timeout=300)
        finally:
            kill_launch(proc)
        text = log.read_text()
        assert proc.returncode == EXIT_IO, text[-4000:]
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 2, errors  # the rank that hit it, and its peer's one line
        assert any(f"cannot write {out}" in line and "no space left on device; make room" in line
                   for line in errors), errors
        assert any("rank 1 on" in line and "stopped: " in line for line in errors), errors
        assert "Traceback" not in text, text[-4000:]
        assert not list(out.rglob(".tmp-*")), list(out.rglob(".tmp-*"))
        assert [c.name for c in (out / "checkpoints").iterdir()] == ["epoch_0001"]
        before = {name: (out / name).read_bytes() for name in ("config.yaml", "history.csv")}

        # --resume while the disk is still full: the same one line, nothing written.
        resumed = subprocess.run(ddp(["--shards", str(shards_dir), "--out", str(out), "--resume"], ours=True),
                                 cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == EXIT_IO and "no space left on device" in resumed.stderr, resumed.stderr[-4000:]
        assert "Traceback" not in resumed.stderr, resumed.stderr[-4000:]
        assert {name: (out / name).read_bytes() for name in before} == before

        (disk / "filler").unlink()  # room made: the run resumes from epoch 1 and finishes
        run(ddp(["--shards", str(shards_dir), "--out", str(out), "--resume"], ours=True))
        assert [row["epoch"] for row in history(out)] == ["1", "2"] and (out / "summary.json").is_file()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk) -> None:
    """Fill the file system at `disk` up to its last bytes (unbuffered writes, smaller and smaller)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.slow
def test_resume_skips_a_truncated_newest_checkpoint_and_says_so(shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--shards", str(shards_dir), "--out", str(out), *TINY, "--workers", "0"]
    assert main([*args, "--epochs", "2"]) == 0
    weights = out / "checkpoints" / "epoch_0002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short, a disk that lost the end
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--epochs", "3"]) == 0
    said = capsys.readouterr().out
    assert "skipped damaged checkpoint" in said and "epoch_0002" in said and "model.safetensors" in said, said
    assert "resumed from" in said and "epoch_0001 (epoch 1 done" in said, said
    assert [row["epoch"] for row in history(out)] == ["1", "2", "3"]
