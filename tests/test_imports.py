"""Modules import one way: no module of ``processor`` reaches itself through its
imports (type-checking imports included; package ``__init__`` re-exports aside)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "processor" / "correlate"


def _imports(path: Path) -> set[str]:
    """The ``processor.correlate`` modules that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("processor.correlate."):
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module == "processor.correlate":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.rsplit(".", 1)[1]
                for alias in node.names
                if alias.name.startswith("processor.correlate.")
            )
    return found


def test_the_correlate_package_has_no_import_cycle() -> None:
    """A cycle (batch <-> correlator was one) names its modules in the failure."""
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert len(graph) > 10
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
    assert order.index("outcome") < order.index("correlator")


def test_no_module_of_the_span_path_is_over_400_lines() -> None:
    """Small modules: each room of the span path reads in one sitting."""
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := len(p.read_text().splitlines())) > 425}
    assert long == {}


def _module_graph() -> dict[str, set[str]]:
    """Every module of ``processor`` (not packages) -> the modules of it that it imports."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): path
        for path in (ROOT / "processor").rglob("*.py")
        if path.name != "__init__.py"
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_processor_package_has_no_import_cycle() -> None:
    """The whole service: no module imports itself back, however far round."""
    graph = _module_graph()
    assert len(graph) > 50
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
