"""A diverging run (a loss that is no longer a finite number) ends in one line, exit status 2.

Finding it costs no host sync of its own. `LossWatch.see` runs after every update on the device
only: it notes the first update whose running loss sum is not finite (a NaN or inf loss keeps the
sum non-finite: losses are never -inf) and folds "this rank has diverged" into the Accelerator's
stop trigger, which the loop's stop agreement already reduces every few updates. Every place where
the loop sums the loss over the ranks (a checkpoint's run state, the epoch's end) then finds the
sum not finite and calls `stop`: one gather of each rank's first bad update, and every rank raises
the same Diverged. That happens before anything is saved, evaluated or written from the diverged
weights, so the newest checkpoint on disk is the last intact one, and the line names it.

A loss can stay finite while the weights of the last update are not (no loss has been computed
with them yet): before each checkpoint and at each epoch's end trainer.main also checks the
weights themselves (`weights_finite`, one host sync there), and an evaluation whose scores are not
finite ends the run the same way (`not_finite`).
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from trainer.faults.exits import BadInput
from trainer.rundir.checkpoint import latest_checkpoint

ADVICE = ("start a new --out with a lower --lr (a tenth, say), a warm-up (--warmup-epochs with --schedule cosine) "
          "or --clip-grad-norm")


class Diverged(BadInput):
    """The run's loss or scores are not finite: said once by the main process, status 2 on every rank."""


class LossWatch:
    """This rank's first update of an epoch whose running loss sum is not finite, kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((), -1, dtype=torch.int64, device=device)  # -1: every loss so far finite
        self.loss = torch.zeros((), device=device)  # the running sum at that update (nan or inf)
        self.lrs: dict[int, float] = {}  # the rate each update of the epoch used

    def see(self, loss_sum: torch.Tensor, update: int, lr: float, accelerator: Accelerator) -> None:
        """After update `update` (trained at rate `lr`): device work only, no host sync."""
        new = ~torch.isfinite(loss_sum) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, update), self.first)
        self.loss = torch.where(new, loss_sum.detach().float(), self.loss)
        self.lrs[update] = lr
        # The stop agreement's own flag: a diverged rank stops every rank at the next stop check.
        flag = accelerator.flag_tensor if accelerator.flag_tensor is not None else torch.zeros_like(self.first)
        accelerator.flag_tensor = torch.maximum(flag, (self.first >= 0).to(flag.dtype))

    def check(self, summed_loss: float, accelerator: Accelerator, run_dir: str, epoch: int) -> None:
        """Collective when it raises: `summed_loss` is the loss summed over every rank (the same number
        on each), so every rank takes the same branch; Diverged when it is not finite."""
        if math.isfinite(summed_loss):
            return
        # One gather of (first bad update, its loss) per rank; the earliest rank's update is the run's.
        mine = torch.stack([self.first.to(self.loss.dtype), self.loss]).reshape(1, 2)
        bad = [(int(u), v) for u, v in accelerator.gather(mine).tolist() if u >= 0]
        update, loss = min(bad, key=lambda pair: pair[0]) if bad else (None, summed_loss)
        raise Diverged(diverged_line(epoch, update, loss, self.lrs.get(update), run_dir))


def intact_checkpoint(run_dir: str) -> str:
    """The newest complete checkpoint, in words (the one a diverged run leaves to resume or inspect)."""
    newest = latest_checkpoint(run_dir)
    return "no checkpoint was saved before it" if newest is None else f"the last intact checkpoint is {newest[0]}"


def diverged_line(epoch: int, update: int | None, loss: float, lr: float | None, run_dir: str) -> str:
    """The one line of a diverged run."""
    where = f"epoch {epoch}" + ("" if update is None else f", update {update}")
    rate = "" if lr is None else f" at lr {lr:.3g}"
    return (f"the run diverged: the train loss is {loss} in {where}{rate}; stopped on every rank without "
            f"evaluating or writing outputs from these weights ({intact_checkpoint(run_dir)}); {ADVICE}")


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite: one host sync, paid per checkpoint and epoch, never per step.
    DDP keeps the parameters equal on every rank, so every rank gets the same answer."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def not_finite(what: str, epoch: int, update: int, train_loss: float, lr: float, run_dir: str) -> Diverged:
    """Diverged for weights (or scores) that are not finite after a finite train loss: update `update` of
    `epoch` made them so, before any loss was computed with them. `lr`: the rate of that update."""
    return Diverged(f"the run diverged: {what} not finite after epoch {epoch}, update {update} (the weights that "
                    f"update made; train loss {train_loss:.4g} until then, lr {lr:.3g}); stopped on every rank "
                    f"without saving or writing outputs from these weights ({intact_checkpoint(run_dir)}); "
                    f"{ADVICE}")
