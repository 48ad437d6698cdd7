"""The rooms of trainer/ stay layered: each imports only the rooms below it, and no modules import
each other in a circle. docs/architecture.md describes the rooms; this keeps the tree honest."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. A room may import its own modules and any room of a lower layer, never one above.
LAYERS: dict[str, int] = {
    "faults": 0, "launch": 0,
    "rundir": 1,
    "config": 2,
    "data": 3, "recipe": 3,
    "evaluation": 4,
    "loop": 5, "tools": 5, "suite": 5,
    "main": 6, "report": 6,
    "score": 7, "predict": 7, "evaluate_run": 7,
}


def _room(module: str) -> str:
    return module.split(".")[1]


def _imports() -> dict[str, set[str]]:
    """{module: the trainer modules it imports at module level or in a function}."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer."):
                for alias in node.names:  # `from trainer.rundir import lock` imports trainer.rundir.lock
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("trainer."))
        graph[module] = found - {module}
    return graph


def test_every_module_is_in_a_room_of_a_layer():
    rooms = {_room(module) for module in _imports() if module != "trainer"}
    assert rooms <= set(LAYERS), f"rooms without a layer (add them to LAYERS and docs/architecture.md): {rooms - set(LAYERS)}"


def test_no_room_imports_a_room_above_it():
    upward = [f"{module} -> {target}" for module, targets in _imports().items() if module != "trainer"
              for target in targets if target != "trainer" and LAYERS[_room(target)] > LAYERS[_room(module)]]
    assert not upward, "imports that run back up: " + "; ".join(upward)


def test_no_import_circle():
    graph = _imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
