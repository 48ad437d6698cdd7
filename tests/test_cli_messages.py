"""What the settings check and the small CLIs say to a user who got something wrong (no training).

trainer.config.main is what `./launch.sh train` runs (as `python -m trainer.config`) before it
starts any process; called in-process here with the same arguments.
"""

from __future__ import annotations

import os

import pytest
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from cli_in_process import run_module
from trainer import config


def _one_error_line(status: int, capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    assert status == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("case", ["existing file", "parent is a file"])
def test_an_out_that_cannot_be_a_folder_is_one_line_before_any_process_starts(shards_dir, tmp_path, capsys, case):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    out = blocker if case == "existing file" else blocker / "run"
    line = _one_error_line(config.main(["--shards", str(shards_dir), "--out", str(out)]), capsys)
    assert line.startswith(f"error: --out: {blocker} ") and "choose" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only-mode folders")
def test_an_out_in_a_folder_without_write_permission_is_one_line(shards_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = _one_error_line(config.main(["--shards", str(shards_dir), "--out", str(locked / "run")]), capsys)
    assert f"cannot write into {locked} (no write permission)" in line


def test_a_tracker_that_is_not_installed_is_refused_with_the_install_hint(shards_dir, tmp_path, capsys):
    installed = {str(t) for t in get_available_trackers()}
    missing = [t.value for t in LoggerType if t.value not in installed and t != LoggerType.ALL]
    if not missing:
        pytest.skip("every tracker Accelerate knows is installed here")
    status = config.main(["--shards", str(shards_dir), "--out", str(tmp_path / "run"), "--log-with", missing[0]])
    line = _one_error_line(status, capsys)
    assert line == f"error: --log-with: {missing[0]} is not installed: pip install {missing[0]} (or --log-with none)"


def test_help_shows_shards_and_out_as_required_without_a_none_default():
    text = config.build_parser().format_help()
    required = text.split("\nrequired:\n", 1)[1]
    assert required.lstrip().startswith("--shards SHARDS") and "--out OUT" in required, text
    assert "(default: None)" not in text
