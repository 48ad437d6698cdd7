"""Exactly-once evaluation of one split across all processes.

Each rank scores the images its eval loader gives it (the reader hands every image of the
split to exactly one rank x worker; ranks may get different batch counts). The forward
therefore runs on the UNWRAPPED model: a DDP forward may run collectives (buffer
broadcast), which would hang when one rank has more batches than another. Then every rank
gathers every rank's (ids, scores, states, loss sum) with `accelerate.utils.gather_object`
(one all_gather_object, fine on gloo and nccl), checks the ids against the split's ids
from the manifest, and computes the metrics itself. All ranks hold the same gathered
data and the computation is deterministic, so all ranks return the same EvalResult, and
a bad id set raises the same error on every rank at the same point (none waits on a
collective that another rank will never reach).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, gather_object
from torch import nn

from shards.classes import ClassList
from shards.transforms import normalize
from trainer.data.stream import RunData
from trainer.evaluation.metrics import average_precisions
from trainer.evaluation.tta import forward_logits, probabilities
from trainer.faults.watchdog import Watchdog

UNWATCHED = Watchdog(0)  # for callers without a run's watchdog (tools, tests): declared waits are not timed

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """One split's evaluation, rows in sorted id order."""

    ids: list[str]  # sorted, equal to the split's ids in the manifest
    scores: np.ndarray  # float32 [N, C]: sigmoid of the class logits (VOC's background logit left out)
    states: np.ndarray  # int8 [N, C]: labels 1 / 0 (VOC's difficult only) / -1
    loss: float | None  # mean loss per image over the split; None without loss_fn or labels
    metrics: dict | None  # trainer.evaluation.metrics.average_precisions(states, scores, names); None without labels


class NonFiniteScores(ValueError):
    """Scores that are NaN or inf: the weights have diverged (trainer.loop.diverge), or a checkpoint is bad."""

    def __init__(self, split: str, count: int) -> None:
        super().__init__(f"split '{split}': {count} scores are NaN or inf (diverged weights or a bad checkpoint?)")
        self.split = split


def _check_ids(ids: Sequence[str], expected_ids: Sequence[str], split: str) -> None:
    """Fail loudly unless the gathered ids are exactly the split's ids, each once."""
    counts = Counter(ids)
    expected = set(expected_ids)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(expected.difference(counts))
    unknown = sorted(set(counts).difference(expected))
    if not (duplicated or missing or unknown):
        return
    problems = [
        f"{len(found)} {what} (first: {', '.join(found[:10])})"
        for what, found in (("missing", missing), ("duplicated", duplicated), ("unknown", unknown))
        if found
    ]
    raise RuntimeError(
        f"evaluation of split '{split}' scored {len(ids)} images for {len(expected)} ids in the "
        f"manifest: {'; '.join(problems)}. Every image must be scored exactly once across all "
        "ranks, or the metrics are wrong. Missing/duplicated ids mean the eval loader did not "
        "split the shards exactly once over ranks x workers (a reader bug) or a shard is "
        "unreadable; unknown ids mean the shards do not match manifest.json (repack them)."
    )


def _local_pass(
    net: nn.Module, loader: Iterable, accelerator: Accelerator, loss_fn: LossFn | None, classes: ClassList,
    tta: str = "none",
) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    """Score this rank's share: (ids, scores [n, C], states [n, C], sum of per-image loss)."""
    ids: list[str] = []
    scores: list[np.ndarray] = []
    states: list[np.ndarray] = []
    loss_sum = 0.0
    for images, batch_states, batch_ids in loader:
        images = normalize(images.to(accelerator.device, non_blocking=True))
        logits = forward_logits(net, images, accelerator)
        if loss_fn is not None:
            # loss_fn returns the batch mean; weight it by the batch size so that the split's
            # loss is the mean per image whatever the (uneven) batch sizes are.
            loss_sum += float(loss_fn(logits, batch_states.to(logits.device))) * len(batch_ids)
        # The loss is the plain view's; --tta only changes the scores.
        scores.append(probabilities(net, images, logits, classes.first_logit, tta, accelerator).cpu().numpy())
        states.append(batch_states.cpu().numpy().astype(np.int8))
        ids.extend(batch_ids)
    if not ids:  # a rank may legitimately get no sample (more ranks x workers than shards)
        empty = np.zeros((0, classes.num_classes))
        return ids, empty.astype(np.float32), empty.astype(np.int8), loss_sum
    return ids, np.concatenate(scores), np.concatenate(states), loss_sum


def evaluate(
    model: nn.Module,
    loader: Iterable,
    accelerator: Accelerator,
    *,
    classes: ClassList,
    expected_ids: Sequence[str],
    loss_fn: LossFn | None = None,
    split: str = "eval",
    labeled: bool = True,
    watchdog: Watchdog = UNWATCHED,
    epoch: int | None = None,
    tta: str = "none",
) -> EvalResult:
    """Score every image of a split once across all ranks; the same result on every rank.

    loader yields (uint8 images [B, 3, S, S], int8 states [B, C], ids) for this rank's
    share (shards.reader.eval_loader with this process's rank); `classes` says which logits
    are scores and names the columns. expected_ids: the split's ids from the manifest.
    loss_fn(logits [B, L], states [B, C]) (a recipe.loss.StatesLoss) returns the batch mean.
    split only names the split in error messages. labeled=False (labels hidden: the states are
    placeholders) scores and checks the ids but computes no loss and no metrics. The model's
    train/eval mode is restored. Its waits (each batch, the collectives) are declared to `watchdog`;
    `epoch` only names where in its message. tta "flip": the scores average each image's and its
    mirror's probabilities (trainer.evaluation.tta); the loss stays the plain view's.
    """
    if not expected_ids:
        raise ValueError(f"split '{split}' has no images in the manifest: nothing to evaluate")
    if not labeled:  # the states are placeholders: no loss to compute
        loss_fn = None
    net = accelerator.unwrap_model(model)
    # DDP hands rank 0's buffers (BatchNorm running statistics) to the others at the start of each
    # training forward, which then update them with their own batch: after the last one every rank
    # holds different ones. Score with rank 0's, the ones checkpoints save, so that an image's score
    # does not depend on which rank scored it.
    if accelerator.num_processes > 1:
        with watchdog.waiting("rank 0's BatchNorm statistics (a broadcast)", phase=f"evaluate {split}", epoch=epoch):
            for buffer in net.buffers():
                broadcast(buffer, from_process=0)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            batches = watchdog.watch(loader, f"the next batch of the {split} eval loader", phase=f"evaluate {split}",
                                     epoch=epoch)
            local = _local_pass(net, batches, accelerator, loss_fn, classes, tta)
    finally:
        net.train(was_training)

    # One object per rank; gather_object returns the list of all ranks' objects (and the
    # object itself, in a list here, on a single process).
    with watchdog.waiting("every rank's scores (a gather: the slowest rank's share decides)",
                          phase=f"evaluate {split}", epoch=epoch):
        gathered = gather_object([local])
    ids = [i for rank_ids, _, _, _ in gathered for i in rank_ids]
    _check_ids(ids, expected_ids, split)
    scores = np.concatenate([s for _, s, _, _ in gathered])
    states = np.concatenate([s for _, _, s, _ in gathered])
    if not np.all(np.isfinite(scores)):  # every rank holds the same gathered scores: all raise together
        raise NonFiniteScores(split, int(np.sum(~np.isfinite(scores))))
    order = sorted(range(len(ids)), key=ids.__getitem__)
    loss = sum(loss for _, _, _, loss in gathered) / len(ids) if loss_fn is not None else None
    return EvalResult(
        ids=[ids[i] for i in order],
        scores=scores[order],
        states=states[order],
        loss=loss,
        metrics=average_precisions(states[order], scores[order], classes.names) if labeled else None,
    )


def evaluate_split(model: nn.Module, data: RunData, split: str, accelerator: Accelerator,
                   loss_fn: LossFn | None = None, *, watchdog: Watchdog = UNWATCHED,
                   epoch: int | None = None, tta: str = "none") -> EvalResult:
    """`evaluate` on one split of the run's data source (all of it; the first batches in --debug)."""
    with watchdog.waiting(f"the {split} eval loader's workers to start", phase=f"evaluate {split}", epoch=epoch):
        batches, expected_ids = data.eval(split)
    return evaluate(model, batches, accelerator, classes=data.classes, expected_ids=expected_ids, loss_fn=loss_fn,
                    split=split, labeled=data.is_labeled(split), watchdog=watchdog, epoch=epoch, tta=tta)
