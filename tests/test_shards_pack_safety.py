"""shards.pack as a shared tool: one pack per output folder, a killed pack's leftovers cleaned,
shards others can read, a truncated archive named in one line (real processes and files)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

from rich.console import Console

from shards.pack import PackOptions, pack, pack_lock

HOLD = ("import sys; from pathlib import Path; from shards.pack import pack_lock\n"
        "with pack_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()\n")


def _pack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shards.pack", *args], capture_output=True, text=True, timeout=300)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_a_truncated_archive_is_one_line_naming_it_and_nothing_is_written(voc_root, tmp_path):
    whole = tmp_path / "VOCtrainval_06-Nov-2007.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(voc_root, arcname="VOCdevkit")
    cut = tmp_path / "cut" / whole.name
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # head -c HALF, as a broken download
    out = tmp_path / "data" / "shards"
    line = _one_error_line(_pack("--voc", str(cut), "--out", str(out)))
    assert line.startswith(f"error: --voc {cut}: the archive is truncated or damaged"), line
    assert not (tmp_path / "data").exists()


def test_a_second_pack_into_the_same_place_is_refused_naming_the_holder(voc_root, tmp_path):
    out = tmp_path / "shards"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        line = _one_error_line(_pack("--voc", str(voc_root), "--out", str(out)))
        assert f"error: --out {out} is being packed by another shards.pack (host " in line
        assert f", pid {holder.pid}, since " in line
        assert not out.exists()
    finally:
        holder.communicate("", timeout=60)
    assert not pack_lock(out).path.exists(), "the lock file outlived its pack"


def test_a_killed_packs_partial_folder_is_removed_by_the_next_pack(voc_root, tmp_path):
    out = tmp_path / "shards"
    # What a SIGKILLed pack leaves: its hidden staging folder with some shards in it.
    partial = tmp_path / ".shards.partial-k1ll3d"
    partial.mkdir()
    (partial / "train-00000.tar").write_bytes(b"\0" * 300_000)
    done = _pack("--voc", str(voc_root), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"removed {partial} (0.3 MB), left by an earlier pack into {out} that did not finish" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_the_shard_folder_gets_the_ordinary_mode_of_a_new_folder(voc_root, tmp_path):
    previous = os.umask(0o027)
    try:
        pack([voc_root], tmp_path / "shards", PackOptions(), Console(quiet=True))
    finally:
        os.umask(previous)
    assert (tmp_path / "shards").stat().st_mode & 0o777 == 0o750  # was 0700, a temporary folder's
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "shards").iterdir()} == {0o640}
