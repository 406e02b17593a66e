"""No import cycles in agentcycle: walks the package's import graph statically (ast).

A cycle between two modules (even through a lazy import inside a function) means
neither can be understood, tested or moved alone, and the order of first import
decides what works. Run as a script to print every cycle:

    .venv/bin/python tests/test_layers.py

An import inside ``if TYPE_CHECKING:`` never runs and is not counted.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "agentcycle"

# Imports known to close a cycle, each with why it is still here. Keep this short: an
# edge listed here that no longer exists fails the last test (the list must not rot).
ALLOWED_EDGES: dict[tuple[str, str], str] = {}


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    files = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import statement, nested ones included, but not those under TYPE_CHECKING
    (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool,
             modules: set[str]) -> set[str]:
    """The agentcycle modules one import statement runs (the most specific one named)."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        return {_known(base, modules) for base in bases} - {None}
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    found = {f"{base}.{alias.name}" for alias in node.names} & modules
    if len(found) < len(node.names):  # some names are attributes of the module itself
        found.add(_known(base, modules))
    return found - {None}


def _known(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the agentcycle modules it imports."""
    files = module_files(src)
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, name, path.name == "__init__.py", modules)
        graph[name] = {e for e in edges if e != name and e.startswith(ROOT)}
    return graph


def collapse(graph: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """The graph between subpackages: agentcycle.router.config -> agentcycle.router."""
    def top(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    collapsed: dict[str, set[str]] = {}
    for name, edges in graph.items():
        collapsed.setdefault(top(name), set()).update(top(e) for e in edges)
    return {name: edges - {name} for name, edges in collapsed.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """One shortest import chain start -> ... -> goal (to say where a cycle runs)."""
    seen, frontier = {start: [start]}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for edge in sorted(graph.get(node, ())):
                if edge not in seen:
                    seen[edge] = [*seen[node], edge]
                    nxt.append(edge)
        frontier = nxt
    return seen.get(goal, [])


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    """One shortest loop through the component's first module: 'a -> b -> a'."""
    first = component[0]
    loops = [path_between(graph, nxt, first) for nxt in sorted(graph[first]) if nxt in component]
    return " -> ".join([first, *min((p for p in loops if p), key=len)])


def without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: {e for e in edges if (name, e) not in ALLOWED_EDGES}
            for name, edges in graph.items()}


def test_no_cycle_between_subpackages():
    graph = collapse(without_allowed(import_graph()))
    assert [describe(graph, c) for c in cycles(graph)] == []


def test_no_cycle_between_modules():
    graph = without_allowed(import_graph())
    assert [describe(graph, c) for c in cycles(graph)] == []


def test_every_allowed_edge_still_exists():
    graph = import_graph()
    assert [edge for edge in ALLOWED_EDGES if edge[1] not in graph.get(edge[0], ())] == []


def test_the_walker_finds_a_lazy_cycle(tmp_path):
    # The checks above must be able to fail: a cycle through a function-level import.
    pkg = tmp_path / ROOT
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from agentcycle.b.x import f\n")
    (pkg / "b" / "__init__.py").write_text("")
    (pkg / "b" / "x.py").write_text("def f():\n    from ..a import g\n")
    (pkg / "b" / "y.py").write_text("from typing import TYPE_CHECKING\n"
                                    "if TYPE_CHECKING:\n    from agentcycle.a import g\n")
    graph = import_graph(tmp_path)
    assert graph["agentcycle.b.y"] == set()
    assert cycles(graph) == [["agentcycle.a", "agentcycle.b.x"]]
    assert cycles(collapse(graph)) == [["agentcycle.a", "agentcycle.b"]]
    assert describe(graph, cycles(graph)[0]) == "agentcycle.a -> agentcycle.b.x -> agentcycle.a"


if __name__ == "__main__":
    full = import_graph()
    for label, graph in (("subpackages", collapse(full)), ("modules", full)):
        found = cycles(graph)
        print(f"{len(found)} cycle(s) between {label} (allowed edges included)")
        for component in found:
            print("  " + describe(graph, component))
    sys.exit(1 if cycles(without_allowed(full)) else 0)
