"""An exponential moving average of the weights (`--ema-decay D`), as timm's ModelEmaV3 and
torchvision's references keep one: torch.optim.swa_utils.AveragedModel with
get_ema_multi_avg_fn, updated after every optimizer update.

Every rank holds one and updates it from its own copy of the weights, which DDP keeps identical
after each update, so the averaged parameters agree without a collective. Buffers (BatchNorm
running statistics) are averaged too and differ per rank, like the model's own: evaluation
scores with rank 0's (trainer.evaluation.evaluate broadcasts them), and checkpoints keep rank 0's.
The average is registered for checkpointing with the Accelerator, so `--resume` restores it and
a resumed run ends with the same EMA weights as one never stopped.
"""

from __future__ import annotations

from accelerate import Accelerator
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(accelerator: Accelerator, model: nn.Module, decay: float) -> AveragedModel | None:
    """The EMA of the prepared `model` (None for decay 0), registered for checkpointing; call it
    before any checkpoint is loaded."""
    if decay <= 0:
        return None
    # The plain module under DDP and torch.compile: the average holds its own uncompiled copy.
    ema = AveragedModel(accelerator.unwrap_model(model, keep_torch_compile=False),
                        multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    accelerator.register_for_checkpointing(ema)
    return ema
