"""Issue 16 items 4 and 6 through the trainer itself: a 2-process run whose --out fills up ends
on both ranks with the disk error named, nothing left half-written; a run refused after its
--out was claimed leaves no empty --out behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from train_helpers import ROOT, TINY, ddp, env
from trainer.main import main


def test_a_refused_one_process_run_leaves_no_empty_out(shards_dir, tmp_path, capsys):
    garbage = tmp_path / "not-weights.pth"
    garbage.write_bytes(b"not a state dict")
    args = ["--shards", str(shards_dir), "--model", "alexnet_pretrained", "--weights", str(garbage), "--cpu",
            "--epochs", "1"]
    out = tmp_path / "new" / "run"  # refused by build_model, after RunDirLock.claim made the folders
    assert main([*args, "--out", str(out)]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()  # a folder the user made stays, even empty
    assert main([*args, "--out", str(existing)]) == 2
    assert existing.is_dir() and not any(existing.iterdir())


@pytest.mark.slow
def test_a_ddp_run_on_a_full_disk_fails_on_every_rank_with_the_errno_and_leaves_no_partial_save(shards_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    # 8 MiB: config.yaml and history fit, vocnet's best/ (14 MB) and checkpoint (43 MB) do not.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = disk / "run"
        done = subprocess.run(ddp(["--shards", str(shards_dir), "--out", str(out), "--epochs", "1", *TINY]),
                              cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
        text = done.stdout + done.stderr
        assert done.returncode != 0, text[-4000:]
        assert f"OSError: [Errno 28] No space left on device: '{out / 'best'}'" in text, text[-6000:]
        assert "PeerFailed: saving the best model" in text and "failed on process 0" in text, text[-6000:]
        left = sorted(p.name for p in out.iterdir())
        assert left == ["config.yaml", "history.csv"], left  # no .tmp-best, no best/, no checkpoints
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
