"""Layering: low layers never import high ones, the library never imports Slicer or training, and
there are no import cycles (imports inside functions count: they hide cycles, they do not remove them).

Layers, low to high (docs/ARCHITECTURE.md):
errors, volume -> io, geometry, intensity, resize, metrics -> models -> engine -> consistency,
evaluate, panel, pipeline -> run -> batch -> cli. ``training`` and ``benchmarks`` sit on top of MedSRLib; ``MedSR``
(the Slicer module) on top of everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("MedSRLib", "training")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (absolute names), at any depth, except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # ``from . import device`` imports the module ``pkg.device``
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {t for t in _imports(name, path, known)} for name, path in modules.items()}


GRAPH = _graph()

#: module prefix -> prefixes it must never import
FORBIDDEN = {
    "MedSRLib.errors": ("MedSRLib.",),
    "MedSRLib.volume": ("MedSRLib.io", "MedSRLib.geometry", "MedSRLib.models", "MedSRLib.engine", "MedSRLib.pipeline"),
    **{
        low: ("MedSRLib.models", "MedSRLib.engine", "MedSRLib.pipeline", "MedSRLib.cli", "MedSRLib.evaluate",
              "MedSRLib.panel", "MedSRLib.consistency", "MedSRLib.run", "MedSRLib.batch")
        for low in ("MedSRLib.io", "MedSRLib.geometry", "MedSRLib.intensity", "MedSRLib.resize", "MedSRLib.metrics")
    },
    "MedSRLib.models": ("MedSRLib.engine", "MedSRLib.pipeline", "MedSRLib.cli", "MedSRLib.evaluate",
                        "MedSRLib.panel", "MedSRLib.consistency", "MedSRLib.io", "MedSRLib.run", "MedSRLib.batch"),
    "MedSRLib.engine": ("MedSRLib.pipeline", "MedSRLib.cli", "MedSRLib.evaluate", "MedSRLib.panel",
                        "MedSRLib.consistency", "MedSRLib.io", "MedSRLib.run", "MedSRLib.batch"),
    **{same: ("MedSRLib.run", "MedSRLib.batch", "MedSRLib.cli") for same in ("MedSRLib.pipeline", "MedSRLib.consistency",
                                                            "MedSRLib.evaluate", "MedSRLib.panel")},
    "MedSRLib.run": ("MedSRLib.batch", "MedSRLib.cli"),
    "MedSRLib.batch": ("MedSRLib.cli",),
    "MedSRLib": ("slicer", "qt", "vtk", "ctk", "MedSR", "MedSRSlicerLib", "training", "benchmarks"),
    "training": ("benchmarks", "slicer", "MedSR", "MedSRSlicerLib"),
}


def _matches(module: str, prefix: str) -> bool:
    return module == prefix.rstrip(".") or module.startswith(prefix if prefix.endswith(".") else prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_higher_one(layer: str) -> None:
    bad = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _matches(module, layer)
        for target in targets
        for forbidden in FORBIDDEN[layer]
        if _matches(target, forbidden) and not _matches(target, layer)
    )
    assert not bad, "\n".join(bad)


def test_there_are_no_import_cycles() -> None:
    """Depth-first search over the package-internal graph; a package's own ``__init__`` re-exporting
    its submodules is not a cycle (importing ``pkg.sub`` runs ``pkg`` first by design)."""
    graph = {m: {t for t in ts if t in GRAPH and not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    for module, targets in graph.items():  # a package's __init__ importing its own submodules is fine
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_imports_inside_functions() -> None:
    """The checker itself: a function-level import (pipeline -> engine) and a relative one are found."""
    assert "MedSRLib.engine" in GRAPH["MedSRLib.pipeline"]
    assert "MedSRLib.engine.device" in GRAPH["MedSRLib.engine.runner"]
    assert "MedSRLib.models.registry" in GRAPH["MedSRLib.models.weights"]
