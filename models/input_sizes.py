"""Which square input sizes a network takes, found without computing anything.

The network is built on the meta device (registry.meta_architecture: shapes only, no memory, no
weights file read: pretrained models are checked through their from-scratch twin) and run on a
meta tensor [1, 3, S, S]: a size its layers cannot take fails the same way it would on real data
(a pooled map of 0x0, a Linear layer of the wrong width, ViT's size assertion), in milliseconds
for the report's networks and about a second for the largest torchvision ones. The trainer's
pre-launch check (trainer.config) uses it, so `--model simple --image-size 64` is refused before
any process starts.
"""

from __future__ import annotations

import torch

from shards.classes import VOC

from .registry import meta_architecture

# Sizes searched for the ones a network takes, when the asked one fails. Networks with global
# pooling take everything from their smallest size up; fixed-size ones (a flatten into a Linear
# layer) take a narrow band, e.g. simple: 224..231, or one size (vit_b_16: 224, vit_h_14: 518).
SEARCH = range(32, 1025)


def _takes(model: torch.nn.Module, size: int, num_logits: int) -> str | None:
    """None when `model` maps [1, 3, size, size] to (1, num_logits) logits, else why not."""
    with torch.no_grad():
        try:
            out = model(torch.empty(1, 3, size, size, device="meta"))
        except (RuntimeError, ValueError, AssertionError) as err:  # torchvision's ViT asserts its size
            return str(err).splitlines()[0] if str(err) else type(err).__name__
    if tuple(out.shape) != (1, num_logits):
        return f"it emits {tuple(out.shape)}, not (1, {num_logits}) logits"
    return None


def _sizes_taken(model: torch.nn.Module, num_logits: int) -> tuple[int, int | None] | None:
    """(smallest, largest) size in SEARCH the model takes, largest None when it takes every size
    from the smallest up (checked at the top of SEARCH); None when it takes none."""
    if _takes(model, SEARCH.stop - 1, num_logits) is None:  # global pooling: every size up from the smallest
        return _smallest(model, num_logits), None
    first = next((s for s in SEARCH if _takes(model, s, num_logits) is None), None)
    if first is None:
        return None
    last = first  # a fixed-size network: a narrow band (simple 224..231, final 183..246)
    while last + 1 in SEARCH and _takes(model, last + 1, num_logits) is None:
        last += 1
    return first, last


def _smallest(model: torch.nn.Module, num_logits: int) -> int:
    """The smallest size in SEARCH a global-pooling model takes, by bisection: a stack of convolutions
    and pools that takes S takes every larger size, and a large network's meta pass costs ~1 s."""
    low, high = SEARCH.start, SEARCH.stop - 1  # high is taken
    while low < high:
        middle = (low + high) // 2
        if _takes(model, middle, num_logits) is None:
            high = middle
        else:
            low = middle + 1
    return high


def smallest_input_size(name: str, num_logits: int = VOC.num_logits) -> int | None:
    """The smallest square size in SEARCH model ``name`` takes, None when it takes none."""
    band = _sizes_taken(meta_architecture(name, num_logits).eval(), num_logits)
    return None if band is None else band[0]


def input_size_problem(name: str, size: int, num_logits: int = VOC.num_logits) -> str | None:
    """Why model `name` cannot take size x size images (with the sizes it does take), or None."""
    model = meta_architecture(name, num_logits).eval()
    why = _takes(model, size, num_logits)
    if why is None:
        return None
    band = _sizes_taken(model, num_logits)
    if band is None:
        return f"model '{name}' cannot take {size}x{size} images, nor any size from {SEARCH.start} to " \
               f"{SEARCH.stop - 1} ({why})"
    if band[1] is None:
        takes = f"the smallest size it takes is {band[0]}"
    elif band[0] == band[1]:
        takes = f"it takes {band[0]} only"
    else:
        takes = f"it takes {band[0]} to {band[1]} only (smallest {band[0]})"
    return f"model '{name}' cannot take {size}x{size} images; {takes}"
