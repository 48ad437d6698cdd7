"""What the loop and evaluation read: this process's batches, and what the manifest says of the splits.

`RunData` is the training loop's one data argument: `batches` per epoch, `train(epoch, skip)`
and `eval(split)`, plus the manifest facts the run reports. Two sources implement it:
`ShardStream` (here) streams and decodes the shards every epoch; `DeviceData`
(trainer/data/device.py) decodes them once and keeps them on the training device;
trainer/data/choose.py picks one. Both get the rank and world size from the Accelerator and
stay out of `accelerator.prepare`, which would split them a second time (docs/NOTES.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from shards.classes import class_list
from shards.manifest import is_labeled, load_manifest, skipped_ids, split_entry
from shards.reader import Batch, eval_loader, steps_per_epoch, train_loader
from shards.verify import has_checksums
from trainer.config import ConfigError, TrainConfig
from trainer.config.fields import eval_splits, train_split

DEBUG_BATCHES = 3  # per epoch and per evaluated split in --debug


class RunData:
    """The manifest's facts about the splits, and the batches per epoch both sources give."""

    def __init__(self, cfg: TrainConfig, *, rank: int, world_size: int) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        manifest = load_manifest(cfg.shards)
        self.classes = class_list(manifest)  # the columns of every batch's states, the model's logits
        # trainer.config.validate verified the checksums; a manifest without any gets a warning from main.
        self.checksummed = has_checksums(manifest)
        # What the run trains on ("train", or "train+val": --train-splits) and every split it evaluates.
        self.train_split, self.eval_splits = train_split(cfg), eval_splits(cfg)
        entries = {split: split_entry(manifest, split, cfg.shards) for split in self.eval_splits}
        self.split_ids = {split: entry["ids"] for split, entry in entries.items()}
        self._labeled = {split: is_labeled(entry) for split, entry in entries.items()}
        # Ids the split's ImageSets list names but `shards.pack --skip-bad` left out: no score for them.
        self.skipped_at_pack = {split: skipped_ids(manifest, split) for split in manifest["splits"]}
        self._train_split = entries[self.train_split]
        batches = steps_per_epoch(cfg.shards, batch_size=cfg.batch_size, world_size=world_size, split=self.train_split)
        batches = min(batches, DEBUG_BATCHES) if cfg.debug else batches
        if batches < cfg.grad_accum:
            raise ConfigError(f"--grad-accum {cfg.grad_accum}: an epoch has only {batches} batches per process")
        # Whole accumulation windows only: an unfinished one would leak its gradients into the
        # next epoch and is in no checkpoint.
        self.batches = batches - batches % cfg.grad_accum

    def is_labeled(self, split: str) -> bool:
        """False for a split packed without annotations (hidden test labels): scores, no metric."""
        return self._labeled[split]

    def train_positives(self) -> tuple[dict[str, int], int]:
        """(images with each class, images) of the training data, for --pos-weight auto."""
        return self._train_split["positives"], self._train_split["count"]

    def train(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch` after the first `skip`; the order is a function of
        (seed, epoch, rank), so after a mid-epoch resume the skipped ones are those trained on."""
        raise NotImplementedError

    def eval(self, split: str) -> tuple[Iterable[Batch], list[str]]:
        """This rank's share of `split` in batches, and the ids all ranks together must score (all
        of the split; in --debug only those of the first batches)."""
        batches = self._eval_batches(split)
        if not self.cfg.debug:
            return batches, self.split_ids[split]
        kept = list(islice(batches, DEBUG_BATCHES))
        return kept, [image_id for _, _, ids in kept for image_id in ids]

    def _eval_batches(self, split: str) -> Iterable[Batch]:
        raise NotImplementedError


class ShardStream(RunData):
    """The shard loaders of one process, cut to what --debug and --grad-accum allow."""

    def _common(self) -> dict:
        return dict(batch_size=self.cfg.batch_size, rank=self.rank, world_size=self.world_size,
                    num_workers=0 if self.cfg.debug else self.cfg.workers, image_size=self.cfg.image_size)

    def train(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        loader = train_loader(self.cfg.shards, seed=self.cfg.seed, epoch=epoch, preset=self.cfg.augment,
                              erasing=self.cfg.random_erasing, split=self.train_split, **self._common())
        return islice(loader, skip, self.batches)

    def _eval_batches(self, split: str) -> Iterable[Batch]:
        return iter(eval_loader(self.cfg.shards, split=split, **self._common()))
