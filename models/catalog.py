"""Every registered model with its parameter count: ``python -m models`` without a name.

The networks are built on the meta device (registry.meta_architecture): shapes only, so even
vit_h_14's 632 M parameters are counted without memory; the cost is building each network's
modules, about 0.1-2 s for a torchvision one on a busy 2-core box. timm's 1,300+ networks
(``timm/NAME``, models/timm_zoo.py) get one line, not a row each.
"""

from __future__ import annotations

from shards.classes import VOC

from .registry import SOURCES, list_models, meta_architecture, namespaces
from .timm_zoo import catalog_line


def catalog_names() -> list[str]:
    """Every name registered one by one: ours (the report's networks first among them) then torchvision's,
    each sorted (timm/ names, registered as they are used, get catalog_line instead)."""
    listed = [source for source in SOURCES if source not in namespaces().values()]
    return [name for source in listed for name in list_models(source)]


def parameter_count(name: str, num_logits: int = VOC.num_logits) -> int:
    """Parameters of model ``name`` with a ``num_logits``-wide head (a pretrained model's count is its twin's)."""
    return sum(param.numel() for param in meta_architecture(name, num_logits).parameters())


def catalog(names: list[str] | None = None, num_logits: int = VOC.num_logits) -> str:
    """A table of ``names`` (default: catalog_names()) with their source and parameter count."""
    names = catalog_names() if names is None else names
    sources = {name: source for source in SOURCES for name in list_models(source)}
    rows = [("model", "from", "params")]
    rows += [(name, sources[name], f"{parameter_count(name, num_logits):,}") for name in names]
    widths = [max(len(row[col]) for row in rows) for col in range(3)]
    lines = [f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2].rjust(widths[2])}" for row in rows]
    lines.append(f"{len(names)} models; params with a {num_logits}-logit head. "
                 "`python -m models NAME` prints one's layer table.")
    lines.append(catalog_line())
    return "\n".join(lines)
