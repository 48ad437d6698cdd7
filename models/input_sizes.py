"""Which square input sizes a network takes, found without computing anything.

The network is built on the meta device (`torch.device("meta")`: shapes only, no memory, no
weights file read: pretrained models are checked through their from-scratch twin,
registry.create_architecture) and run on a meta tensor [1, 3, S, S]: a size its layers
cannot take fails the same way it would on real data (a pooled map of 0x0, a Linear layer of
the wrong width), in about a millisecond. The trainer's pre-launch check (trainer.config)
uses it, so `--model simple --image-size 64` is refused before any process starts.
"""

from __future__ import annotations

import torch

from shards.classes import VOC

from .registry import create_architecture

# Sizes searched for the ones a network takes, when the asked one fails. Networks with global
# pooling take everything from their smallest size up; fixed-size ones (a flatten into a Linear
# layer) take a narrow band, e.g. simple: 224..231.
SEARCH = range(32, 513)


def _takes(model: torch.nn.Module, size: int, num_logits: int) -> str | None:
    """None when `model` maps [1, 3, size, size] to (1, num_logits) logits, else why not."""
    with torch.no_grad():
        try:
            out = model(torch.empty(1, 3, size, size, device="meta"))
        except (RuntimeError, ValueError) as err:
            return str(err).splitlines()[0] if str(err) else type(err).__name__
    if tuple(out.shape) != (1, num_logits):
        return f"it emits {tuple(out.shape)}, not (1, {num_logits}) logits"
    return None


def _sizes_taken(model: torch.nn.Module, num_logits: int) -> tuple[int, int | None] | None:
    """(smallest, largest) size in SEARCH the model takes, largest None when it takes every size
    from the smallest up (checked at the top of SEARCH); None when it takes none."""
    first = next((s for s in SEARCH if _takes(model, s, num_logits) is None), None)
    if first is None:
        return None
    if _takes(model, SEARCH.stop - 1, num_logits) is None:  # global pooling: every size up from the smallest
        return first, None
    last = first  # a fixed-size network: a narrow band (simple 224..231, final 183..246)
    while last + 1 in SEARCH and _takes(model, last + 1, num_logits) is None:
        last += 1
    return first, last


def input_size_problem(name: str, size: int, num_logits: int = VOC.num_logits) -> str | None:
    """Why model `name` cannot take size x size images (with the sizes it does take), or None."""
    with torch.device("meta"):
        model = create_architecture(name, num_logits).eval()
    why = _takes(model, size, num_logits)
    if why is None:
        return None
    band = _sizes_taken(model, num_logits)
    if band is None:
        return f"model '{name}' cannot take {size}x{size} images, nor any size from {SEARCH.start} to " \
               f"{SEARCH.stop - 1} ({why})"
    takes = f"the smallest size it takes is {band[0]}" if band[1] is None else \
        f"it takes {band[0]} to {band[1]} only (smallest {band[0]})"
    return f"model '{name}' cannot take {size}x{size} images; {takes}"
