"""Every trainable network, by name: a dict plus a decorator (like torchvision.models._api).

Family modules register their builders with ``@register_model()``; ``models/__init__.py``
imports those modules explicitly, so the registry is complete once ``models`` is imported.
Every builder takes ``num_logits`` (the width of its head, from the data's class list:
shards.classes); its default is VOC's 21, the reference report's head.
"""

import difflib
import inspect
from typing import Any, Callable, TypeVar

import torch
from accelerate import init_on_device
from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# Model name -> the registered name whose builder makes the same network without loading any
# weights (a pretrained model's from-scratch twin): for checks that need only the shapes.
_ARCHITECTURES: dict[str, str] = {}
# Model name -> where its builder comes from: "ours" (this repository's: the report's networks,
# vocnet, the ResNets), "torchvision" (models/torchvision_zoo.py) or "timm" (models/timm_zoo.py).
_SOURCES: dict[str, str] = {}
SOURCES: tuple[str, ...] = ("ours", "torchvision", "timm")
# Name prefix -> (resolver, source) for a family too large to register name by name (timm's 1,300+
# networks): `resolve(rest)` returns the builder of prefix+rest, registered on its first use, or raises
# ValueError saying why there is none.
_NAMESPACES: dict[str, tuple[Callable[[str], Callable[..., nn.Module]], str]] = {}


def register_model(name: str | None = None, *, architecture: str | None = None,
                   source: str = "ours") -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (default: the function's name); a name is taken once.
    ``architecture``: the registered model with the same layers whose builder loads no weights
    (for ``*_pretrained`` builders, which read a weights file). ``source``: one of SOURCES."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")

    def register(builder: Builder) -> Builder:
        key = name or builder.__name__
        if key in _BUILDERS:
            taken = _BUILDERS[key]
            raise ValueError(f"model name {key!r} is already registered by {taken.__module__}.{taken.__qualname__}")
        _BUILDERS[key] = builder
        _ARCHITECTURES[key] = architecture or key
        _SOURCES[key] = source
        return builder

    return register


def register_namespace(prefix: str, resolve: Callable[[str], Callable[..., nn.Module]], *, source: str) -> None:
    """Names starting with ``prefix`` are built by ``resolve(rest of the name)``'s builder (see _NAMESPACES)."""
    if prefix in _NAMESPACES:
        raise ValueError(f"model name prefix {prefix!r} is already registered")
    _NAMESPACES[prefix] = (resolve, source)


def namespaces() -> dict[str, str]:
    """Registered name prefixes and their sources, e.g. {"timm/": "timm"}."""
    return {prefix: source for prefix, (_, source) in _NAMESPACES.items()}


def list_models(source: str | None = None) -> list[str]:
    """Names ``create_model`` accepts, sorted; only those from ``source`` when given (see SOURCES).
    Without ``source``, the names registered one by one: a namespace's (``timm/...``) are countless
    and registered as they are used, so they are listed only when their source is asked for."""
    if source is None:
        return sorted(name for name in _BUILDERS if _SOURCES[name] not in namespaces().values())
    return sorted(name for name in _BUILDERS if _SOURCES[name] == source)


def is_registered(name: str) -> bool:
    return name in _BUILDERS


def takes_option(name: str, option: str) -> bool:
    """Whether the builder of registered model ``name`` has the keyword ``option`` (e.g. "pretrained")."""
    check_model_name(name)
    return option in inspect.signature(_BUILDERS[name]).parameters


def check_model_name(name: str) -> None:
    """ValueError naming the closest registered name and every known one, unless ``name`` is registered
    (a namespaced name such as ``timm/resnet18`` is registered here, on its first use)."""
    if name in _BUILDERS:
        return
    for prefix, (resolve, source) in _NAMESPACES.items():
        if name.startswith(prefix):
            register_model(name, source=source)(resolve(name[len(prefix):]))  # ValueError: its own reason
            return
    close = difflib.get_close_matches(name, list_models(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    more = "".join(f"; and {prefix}NAME for {source}'s networks" for prefix, source in namespaces().items())
    raise ValueError(f"unknown model '{name}'; {hint}known: {', '.join(list_models())}{more}")


def create_model(name: str, **options: Any) -> nn.Module:
    """Build the network registered as ``name``; ``options`` go to its builder (checked first)."""
    check_model_name(name)
    builder = _BUILDERS[name]
    # Checked here rather than left to a TypeError, so a typo in a config key names the model.
    accepted = inspect.signature(builder).parameters
    for option in options:
        if option not in accepted:
            takes = ", ".join(accepted) or "no options"
            raise ValueError(f"model {name!r} does not take option {option!r} (it takes: {takes})")
    return builder(**options)


def create_architecture(name: str, num_logits: int | None = None) -> nn.Module:
    """The network ``name`` with its layers only: freshly initialized, no weights file read
    (``meta_architecture`` builds it without allocating anything)."""
    check_model_name(name)
    options = {} if num_logits is None else {"num_logits": num_logits}
    return _BUILDERS[_ARCHITECTURES[name]](**options)


def meta_architecture(name: str, num_logits: int | None = None) -> nn.Module:
    """``create_architecture`` with every parameter and buffer on the meta device: shapes only, no memory.

    Accelerate's ``init_on_device`` moves each parameter to meta as it is registered but leaves plain
    tensors real, unlike ``with torch.device("meta")``: some builders compute their layer widths with
    torch ops and read them back (torchvision's RegNets), which a meta tensor cannot do.
    """
    with init_on_device(torch.device("meta")):
        model = create_architecture(name, num_logits)
    return model.to("meta")
