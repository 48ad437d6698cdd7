"""Exactly-once evaluation: real 2-process DDP through `accelerate launch` on CPU (gloo) over
uneven shards with an odd image count, checked against the devkit label files; plus the
same evaluation in one process, and the errors for a wrong id set."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from sklearn.metrics import average_precision_score
from torch import nn

from ddp_evaluate_script import BATCH_SIZE, IMAGE_SIZE, tiny_net
from trainer.recipe.loss import build_loss
from shards.classes import VOC, VOC_CLASSES
from shards.manifest import load_manifest
from shards.reader import eval_loader
from trainer.evaluation.evaluate import evaluate

SCRIPT = Path(__file__).with_name("ddp_evaluate_script.py")
REPO = SCRIPT.parent.parent


def _free_port() -> int:
    # Another test (or helper) may be running DDP at the same time: never assume 29500 is free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _devkit_states(voc_root: Path, split: str) -> dict[str, np.ndarray]:
    """Labels straight from ImageSets/Main/<class>_<split>.txt, not through the shards."""
    main = next(voc_root.rglob("ImageSets/Main"))
    states: dict[str, np.ndarray] = {}
    for c, name in enumerate(VOC_CLASSES):
        for line in (main / f"{name}_{split}.txt").read_text().splitlines():
            image_id, label = line.split()
            states.setdefault(image_id, np.zeros(VOC.num_classes, dtype=np.int8))[c] = int(label)
    return states


@pytest.fixture
def make_accelerator():
    """Builds a CPU Accelerator in this process; Accelerate's singleton state is reset
    around it so that other tests can build theirs with other settings."""
    def make(**options) -> Accelerator:
        AcceleratorState._reset_state(True)
        return Accelerator(cpu=True, **options)

    yield make
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def ddp_run(shards_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_eval")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(SCRIPT), "--shards", str(shards_dir), "--out", str(out), "--split", "test",
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.slow
def test_ddp_scores_every_test_image_exactly_once(ddp_run, shards_dir):
    expected = load_manifest(shards_dir)["splits"]["test"]["ids"]
    assert len(expected) % 2 == 1  # odd: the two ranks cannot get equal shares
    ranks = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["num_processes"] == 2 and r["wrapped"] == "DistributedDataParallel" for r in ranks)
    # Each rank scored a real, disjoint share; together they cover the split.
    seen0, seen1 = set(ranks[0]["seen_ids"]), set(ranks[1]["seen_ids"])
    assert seen0 and seen1 and not seen0 & seen1
    assert sorted(seen0 | seen1) == sorted(expected)
    # Both ranks returned the same full result.
    assert ranks[0] == {**ranks[1], "seen_ids": ranks[0]["seen_ids"]}
    assert ranks[0]["ids"] == sorted(expected)
    assert np.array(ranks[0]["scores"]).shape == (len(expected), VOC.num_classes)

    with open(ddp_run / "submission.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["id", *VOC_CLASSES]
    assert [row[0] for row in rows] == sorted(expected)  # sorted, each exactly once


@pytest.mark.slow
def test_ddp_metrics_equal_sklearn_on_the_submission(ddp_run, voc_root):
    with open(ddp_run / "submission.csv", newline="") as f:
        _, *rows = list(csv.reader(f))
    scores = np.array([row[1:] for row in rows], dtype=np.float64)
    truth = _devkit_states(voc_root, "test")
    states = np.stack([truth[row[0]] for row in rows])
    metrics = json.loads((ddp_run / "rank0.json").read_text())["metrics"]
    for c, name in enumerate(VOC_CLASSES):
        if not np.any(states[:, c] == 1):
            assert metrics["ap"][c] is None and name in metrics["missing"]
            continue
        assert metrics["ap"][c] == pytest.approx(average_precision_score(states[:, c] == 1, scores[:, c]))
    present = [ap for ap in metrics["ap"] if ap is not None]
    assert present and metrics["map"] == pytest.approx(np.mean(present))


@pytest.mark.slow
def test_single_process_matches_ddp_and_keeps_the_model_in_train_mode(ddp_run, shards_dir, make_accelerator):
    expected = load_manifest(shards_dir)["splits"]["test"]["ids"]
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = eval_loader(shards_dir, split="test", batch_size=BATCH_SIZE, rank=0, world_size=1,
                         num_workers=0, image_size=IMAGE_SIZE)
    result = evaluate(model, loader, make_accelerator(), expected_ids=expected,
                      loss_fn=build_loss("multilabel_soft_margin", VOC), classes=VOC, split="test")
    # Evaluated in eval mode (BatchNorm running stats untouched), then put back in train mode.
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    ddp = json.loads((ddp_run / "rank0.json").read_text())
    assert result.ids == ddp["ids"]
    np.testing.assert_allclose(result.scores, np.array(ddp["scores"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.states, np.array(ddp["states"]))
    # Mean loss per image, whatever the per-rank batch sizes were.
    assert result.loss == pytest.approx(ddp["loss"], rel=1e-5)
    assert result.metrics["map"] == pytest.approx(ddp["metrics"]["map"], rel=1e-5)


@pytest.fixture(scope="module")
def val_batches(shards_dir) -> list:
    return list(eval_loader(shards_dir, split="val", batch_size=4, rank=0, world_size=1,
                            num_workers=0, image_size=IMAGE_SIZE))


def test_bf16_autocast_gives_float32_scores_close_to_fp32(val_batches, shards_dir, make_accelerator):
    # On CPU, bf16 is the mixed precision there is (docs/NOTES.md); logits come out in bf16.
    expected = load_manifest(shards_dir)["splits"]["val"]["ids"]
    loss_fn = build_loss("multilabel_soft_margin", VOC)
    full = evaluate(tiny_net(), val_batches, make_accelerator(), classes=VOC, expected_ids=expected, loss_fn=loss_fn)
    half = evaluate(tiny_net(), val_batches, make_accelerator(mixed_precision="bf16"),
                    classes=VOC, expected_ids=expected, loss_fn=loss_fn)
    assert half.scores.dtype == np.float32
    assert not np.array_equal(half.scores, full.scores)  # autocast did run in bf16
    np.testing.assert_allclose(half.scores, full.scores, atol=2e-2)
    assert half.loss == pytest.approx(full.loss, rel=2e-2)


@pytest.mark.parametrize(
    "change, message",
    [
        ("repeat_batch", r"duplicated \(first: "),
        ("extra_expected", r"1 missing \(first: 999999\)"),
        ("drop_expected", r"1 unknown \(first: "),
    ],
)
def test_wrong_id_set_raises(change, message, val_batches, shards_dir, make_accelerator):
    expected = list(load_manifest(shards_dir)["splits"]["val"]["ids"])
    batches = list(val_batches)
    if change == "repeat_batch":
        batches.append(batches[0])  # as if two ranks had read the same shard
    elif change == "extra_expected":
        expected.append("999999")  # as if a shard had been lost
    else:
        expected = expected[1:]  # as if the shards held an image the manifest does not
    with pytest.raises(RuntimeError, match=message) as error:
        evaluate(tiny_net(), batches, make_accelerator(), classes=VOC, expected_ids=expected, split="val")
    assert "split 'val'" in str(error.value) and "exactly once" in str(error.value)
