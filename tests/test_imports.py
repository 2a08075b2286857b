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


def _sources() -> list[Path]:
    """Every hand-written module of ``processor`` (the generated protobuf code aside)."""
    return [p for p in (ROOT / "processor").rglob("*.py") if "gen" not in p.parts]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_is_over_400_lines() -> None:
    """Small modules: each reads in one sitting."""
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := _lines(p)) > 400}
    assert long == {}


def test_config_plumbing_stays_small() -> None:
    """config/ only parses scalars and secrets, checks TLS files and loads: the
    sections live in their rooms, so no file of it grows past 300 lines."""
    long = {
        p.name: n for p in (ROOT / "processor" / "config").glob("*.py") if (n := _lines(p)) > 300
    }
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


# The floor plan, lowest first: a module imports only from its own layer or the
# layers below (README, "Layout"). Within a layer, rooms do not import in a circle
# (the test above). A module belongs to the longest prefix that names it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("processor", "processor.errors", "processor.model"),
    ("processor.status", "processor.config"),
    ("processor.wire",),
    ("processor.logsetup", "processor.metrics"),
    (
        "processor.identity",
        "processor.identity.address",
        "processor.identity.config",
        "processor.identity.sessions",
        "processor.identity.directory",
        "processor.identity.directory_watch",
    ),
    ("processor.correlate",),
    ("processor.export",),
    ("processor.pipeline",),
    ("processor.receive",),
    ("processor.identity.intake",),
    ("processor.app",),
    ("processor.tools",),
    ("processor.cli", "processor.__main__"),
)


def _layer(module: str) -> int:
    """The layer of ``module``: that of the longest prefix in LAYERS naming it."""
    best, depth = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS and the README"
    return best


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _upward_imports() -> list[str]:
    """Every import (type-checking and function-level ones included) that runs up."""
    found = []
    for path in _sources():
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "processor" and _layer(target) > _layer(module):
                    found.append(f"{module} -> {target}")
    return found


def test_imports_run_down_the_layers() -> None:
    """No module imports from a layer above its own (e.g. the span path from the
    listeners, or a room from the composition root)."""
    assert _upward_imports() == []


def test_the_layer_rule_can_fail() -> None:
    """The rule sees an upward import: the span path importing the service would be one."""
    assert _layer("processor.correlate.batch") < _layer("processor.app.service")
    assert _layer("processor.identity.sessions.memory") < _layer("processor.correlate.batch")
    assert _layer("processor.identity.intake.http") > _layer("processor.receive.auth")
    assert _layer("processor.wire.columns") < _layer("processor.correlate.batch")
