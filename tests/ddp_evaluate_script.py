"""Evaluate a tiny model over a split with real DDP; run by tests/test_evaluate.py as

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... \\
        tests/ddp_evaluate_script.py --shards DIR --out DIR

Each rank writes rank<i>.json (the EvalResult it got, and the ids its own loader gave it);
the main process also writes submission.csv. The test checks those files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from trainer.recipe.loss import build_loss
from shards.classes import VOC
from shards.manifest import load_manifest
from shards.reader import eval_loader
from trainer.evaluation.evaluate import evaluate
from trainer.rundir.outputs import write_submission

IMAGE_SIZE = 32  # small images: a CPU forward in milliseconds
BATCH_SIZE = 3  # does not divide the split sizes: last batches are short


class TinyNet(nn.Module):
    """21 logits from a conv, BatchNorm (so train/eval mode matters) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8, VOC.num_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_net() -> TinyNet:
    """The same weights in every process and in the test's single-process run."""
    torch.manual_seed(0)
    return TinyNet()


def recording(loader: Iterable, seen: list[str]) -> Iterator:
    """Pass the loader's batches through, noting the ids this rank was given."""
    for images, states, ids in loader:
        seen.extend(ids)
        yield images, states, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    accelerator = Accelerator()
    if accelerator.num_processes != 2:
        raise SystemExit(f"expected 2 processes, got {accelerator.num_processes}: launch flags are wrong")
    # prepare() wraps the model in DistributedDataParallel: evaluate must unwrap it.
    model = accelerator.prepare(tiny_net())
    loader = eval_loader(
        args.shards, split=args.split, batch_size=BATCH_SIZE, rank=accelerator.process_index,
        world_size=accelerator.num_processes, num_workers=1, image_size=IMAGE_SIZE,
    )
    seen: list[str] = []
    result = evaluate(
        model, recording(loader, seen), accelerator,
        expected_ids=load_manifest(args.shards)["splits"][args.split]["ids"],
        loss_fn=build_loss("multilabel_soft_margin", VOC), classes=VOC, split=args.split,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "num_processes": accelerator.num_processes,
        "wrapped": type(model).__name__,
        "seen_ids": seen,
        "ids": result.ids,
        "scores": result.scores.tolist(),
        "states": result.states.tolist(),
        "loss": result.loss,
        "metrics": result.metrics,
    }
    (args.out / f"rank{accelerator.process_index}.json").write_text(json.dumps(record))
    if accelerator.is_main_process:
        write_submission(args.out / "submission.csv", result.ids, result.scores, VOC.names)


if __name__ == "__main__":
    main()
