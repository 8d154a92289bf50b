"""The package's layers, read from the source: the import graph of ``recplug/`` has no cycle, and ``recplug/core``
imports nothing from ``recplug/plugins`` (built-ins are found through the plugin registry, never imported by it).

The graph is built from the AST, so imports inside functions count (a lazy import is still a dependency);
imports under ``if TYPE_CHECKING:`` do not (they never run), nor do those of a package ``__init__``'s PEP 562
``__getattr__`` (they run on attribute access, after the package is initialised). ``from pkg import name`` is an
import of the module ``pkg.name`` when there is one, else of ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import recplug

PACKAGE = Path(recplug.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module, is_package: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, except under ``if TYPE_CHECKING:`` and in a package's ``__getattr__``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, top_level)
            return
        if is_package and top_level and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and isinstance(node, ast.Module))

    visit(tree, True)
    return found


def imports_of(name: str) -> set[str]:
    """The recplug modules that module ``name`` imports."""
    path = MODULES[name]
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), is_package):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_package() -> None:
    assert "recplug.core.model.module" in GRAPH and "recplug.plugins.combine" in GRAPH
    assert "recplug.core.errors" in GRAPH["recplug.core.data.dataset"]


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_imports_no_plugin() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("recplug.core")
        for target in targets
        if target == "recplug.plugins" or target.startswith("recplug.plugins.")
    )
    assert not offenders, "recplug/core must not import built-in plugins: " + "; ".join(offenders)


def test_the_checker_finds_cycles_and_ignores_what_never_runs(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import recplug.core.model.module\n"
        "def f():\n    from recplug.core.data import readers\n"
    )
    names = [alias.name for node in _import_nodes(ast.parse(source), False) for alias in node.names]
    assert names == ["TYPE_CHECKING", "readers"]
