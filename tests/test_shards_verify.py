"""Shards that prove their integrity: sha256 per shard in manifest.json, python -m shards.verify,
and the trainer's check before training (real files, real processes)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from shards.manifest import load_manifest
from train_helpers import TINY, run, single


def _verify(shards: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shards.verify", str(shards)], capture_output=True, text=True,
                          timeout=120)


def _zero_2kb_inside_a_jpeg(shard: Path) -> bytes:
    """What the issue did: 2 KB zeroed in the middle of a packed JPEG. Returns the damaged JPEG."""
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    start = member.offset_data + member.size // 2 - 1024
    data = bytearray(shard.read_bytes())
    data[start:start + 2048] = bytes(2048)
    shard.write_bytes(bytes(data))
    return bytes(data[member.offset_data:member.offset_data + member.size])


@pytest.fixture
def copied(shards_dir, tmp_path) -> Path:
    return Path(shutil.copytree(shards_dir, tmp_path / "shards"))


def test_the_manifest_records_every_shards_sha256(shards_dir):
    manifest = load_manifest(shards_dir)
    shards = [name for record in manifest["splits"].values() for name in record["shards"]]
    assert sorted(manifest["sha256"]) == sorted(shards)
    for name in shards:
        assert manifest["sha256"][name] == hashlib.sha256((shards_dir / name).read_bytes()).hexdigest()


def test_verify_passes_a_good_set_and_names_a_damaged_shard(copied):
    good = _verify(copied)
    assert good.returncode == 0 and "match the sha256 in manifest.json" in good.stdout, good.stderr

    damaged = _zero_2kb_inside_a_jpeg(copied / "val-00001.tar")
    Image.open(io.BytesIO(damaged)).load()  # still decodes: only the checksum can tell
    bad = _verify(copied)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {copied}: 1 bad shard(s): val-00001.tar: sha256 differs")

    (copied / "test-00000.tar").unlink()
    assert "test-00000.tar: missing" in _verify(copied).stderr


def test_the_trainer_names_a_damaged_shard_before_training(copied, tmp_path, capsys):
    from trainer.main import main  # in this process: the check comes before anything is started

    _zero_2kb_inside_a_jpeg(copied / "train-00002.tar")
    capsys.readouterr()
    assert main(["--shards", str(copied), "--out", str(tmp_path / "run"), *TINY]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines() == [
        f"error: --shards: 1 bad shard(s) in {copied}: train-00002.tar: sha256 differs from manifest.json "
        f"(changed or damaged since it was packed); pack again or copy the shard set again "
        f"(python -m shards.verify {copied} checks it)"], stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_shards_packed_before_checksums_warn_once_and_train(copied, tmp_path):
    manifest = json.loads((copied / "manifest.json").read_text())
    del manifest["sha256"]
    (copied / "manifest.json").write_text(json.dumps(manifest))
    assert _verify(copied).returncode == 2 and "has no sha256 checksums" in _verify(copied).stderr
    output = run(single(["--shards", str(copied), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY, "--debug"]))
    assert output.count("has no sha256 checksums") == 1, output[-3000:]
    assert (tmp_path / "run" / "summary.json").is_file()
