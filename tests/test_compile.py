"""`--compile` (torch.compile through Accelerate, inductor): it trains, and what it saves loads without it.

Inductor needs a C++ compiler on CPU; the test skips without one. Compiling costs about a
minute here even for the smallest network, so there is one run: --debug, one epoch.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml
from safetensors.torch import load_file

from train_helpers import run, single

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="torch.compile (inductor) on CPU needs a C++ compiler")]


def test_compiled_run_saves_plain_weights_that_evaluate_and_resume_without_compile(shards_dir, tmp_path):
    out = tmp_path / "run"
    log = run(single(["--shards", str(shards_dir), "--out", str(out), "--model", "simple", "--epochs", "1",
                      "--batch-size", "4", "--debug", "--compile", "--workers", "0"]),
              timeout=600)
    assert yaml.safe_load((out / "config.yaml").read_text())["settings"]["compile"] is True
    # The default --loader auto keeps this small set in RAM on CPU, and says why.
    assert "loader: device (--loader auto: " in log and "within 50%" in log, log
    assert "_orig_mod" not in log  # the --debug layer table names the network's own layers
    # best/ holds the network's own parameter names, not torch.compile's wrapper's.
    assert not [key for key in load_file(str(out / "best" / "model.safetensors")) if key.startswith("_orig_mod")]
    evaluated = tmp_path / "eval"
    run([sys.executable, "-m", "trainer.evaluate_run", "--run", str(out), "--split", "val", "--out", str(evaluated)])
    assert json.loads((evaluated / "summary.json").read_text())["map"] is not None
    # The checkpoint resumes without --compile (a hardware knob, free to change on resume).
    resumed = run(single(["--out", str(out), "--resume", "--epochs", "2", "--no-compile"]), timeout=300)
    assert "resumed from" in resumed and (out / "checkpoints" / "epoch_0002").is_dir()
