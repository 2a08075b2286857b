"""The span path's modules import one way: no module of ``processor.correlate``
reaches itself through its imports (type-checking imports included)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "processor" / "correlate"


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
