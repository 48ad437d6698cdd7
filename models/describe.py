"""Architecture table of a network (like the report's): each layer's output shape and parameters.

Shapes come from a real forward pass of one dummy image with hooks on every leaf module,
so the table shows what the network computes, in execution order, at the size asked for.

    python -m models final                       (the command line is models/__main__.py)
    python -m models vocnet --image-size 128
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model


@dataclass(frozen=True)
class LayerRow:
    name: str  # module path in the model, e.g. "features.0"
    kind: str  # module class, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # the module's own parameters; 0 on a second call of a reused module


def trace_layers(model: nn.Module, image_size: int = 227) -> tuple[list[LayerRow], int]:
    """Rows for every leaf-module call of one forward pass, and its multiply-adds per image."""
    rows: list[LayerRow] = []
    seen: set[str] = set()

    def hook_for(name: str) -> Callable[[nn.Module, tuple, object], None]:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            params = 0 if name in seen else sum(p.numel() for p in module.parameters(recurse=False))
            seen.add(name)
            rows.append(LayerRow(name, type(module).__name__, shape, params))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not any(m.children()) or any(m.parameters(recurse=False))]
    handles = [module.register_forward_hook(hook_for(name)) for name, module in leaves]
    first = next(model.parameters(), None)
    dummy = torch.zeros(1, 3, image_size, image_size)
    if first is not None:
        dummy = dummy.to(device=first.device, dtype=first.dtype)
    was_training = model.training
    model.eval()  # BatchNorm must not update its running statistics on a dummy image
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(dummy)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows, counter.get_total_flops() // 2  # the counter counts a multiply-add as 2 FLOPs


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) or "-"


def describe(model_or_name: nn.Module | str, image_size: int = 227) -> str:
    """The layer table of a model (or of ``create_model(name)``) as text, with totals."""
    model = create_model(model_or_name) if isinstance(model_or_name, str) else model_or_name
    title = model_or_name if isinstance(model_or_name, str) else type(model).__name__
    rows, macs = trace_layers(model, image_size)
    table = [("#", "layer", "type", "output", "params")]
    table += [(str(i), r.name, r.kind, _shape_text(r.output_shape), f"{r.params:,}") for i, r in enumerate(rows, 1)]
    widths = [max(len(row[col]) for row in table) for col in range(5)]
    lines = [f"{title}: input 3 x {image_size} x {image_size}"]
    for row in table:
        cells = [cell.rjust(w) if col in (0, 4) else cell.ljust(w) for col, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"total params: {total:,} (trainable {trainable:,})")
    lines.append(f"forward: {macs / 1e9:.3f} GMAC (multiply-adds) per {image_size} px image")
    return "\n".join(lines)

