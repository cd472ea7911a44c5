"""The package's shape, as DESIGN.md draws it: read from the sources' imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_restask

PACKAGE = Path(pytest_restask.__file__).parent


def imports() -> dict[str, set[str]]:
    """Each module of the package, and what it imports (ours by module name,
    others by their top-level name), at any depth of its source."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # from .x import y, from . import x
                    names.update([node.module] if node.module else [alias.name for alias in node.names])
                elif node.module and node.module.startswith("pytest_restask"):
                    names.add(node.module.removeprefix("pytest_restask").lstrip(".") or "__init__")
                elif node.module:
                    names.add(node.module.split(".")[0])
        found[path.stem] = names
    return found


def ours(graph: dict[str, set[str]], module: str) -> set[str]:
    return graph[module] & graph.keys()


def test_no_import_circle() -> None:
    graph = imports()
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for name in ours(graph, module) - {"__init__"}:
                if name == start:
                    cycles.append(" -> ".join([*path, name]))
                elif name not in path:
                    stack.append((name, [*path, name]))
    assert cycles == []


@pytest.mark.parametrize(
    "module",
    ["resources", "statemachine", "events", "sharding", "messages", "plan", "record", "timeline", "contention"],
)
def test_the_pure_core_imports_neither_pytest_nor_execnet(module: str) -> None:
    graph = imports()
    reached, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(ours(graph, name))
    outside = set().union(*(graph[name] - graph.keys() for name in reached))
    assert not outside & {"pytest", "_pytest", "execnet", "pluggy"}, (module, sorted(reached))


def test_execnet_is_imported_only_by_the_spawner() -> None:
    assert sorted(name for name, names in imports().items() if "execnet" in names) == ["spawner"]
