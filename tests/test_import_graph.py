"""No import cycles among the project's modules, function-level imports included.

Every `import` and `from ... import` node of every module under `provisioner/` counts,
wherever it stands: at the top, inside a function or method, under `try:` or `if`. An import
that a function makes late to dodge a cycle still is one, and counts.

Imports under `if TYPE_CHECKING:` count too. They are never executed, so they cannot fail at
import time, and excluding them would be defensible; but a module that needs a type from a
module above it still depends on it, and the graph is meant to show that the layers point
downward. There are none in a cycle today; should one ever be wanted, the shared type moves
down instead (or set COUNT_TYPE_CHECKING to False, and say why here).

Edges: `import a.b` and `from a.b import x` point to `a.b`, or to `a.b.x` when `x` is a
submodule (`from provisioner.commands import host`); a name below the project's modules
(`provisioner.x.y` where `y` is a name in x) points to the nearest module. Relative imports are
resolved against the importing module's package. The implicit import of parent packages
(`provisioner.state` is executed before `provisioner.state.store`) is not an edge: a package
whose `__init__` re-exports its submodules would otherwise be in a cycle with each of them by
construction. Modules outside the project (the standard library, click, ...) are not part of
the graph.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

PACKAGE = "provisioner"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
COUNT_TYPE_CHECKING = True


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    where: str  # "module level" or "in function NAME", and "under TYPE_CHECKING"


def _module_names() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


class _Collector(ast.NodeVisitor):
    """Every import node of one module, with the function it stands in (if any)."""

    def __init__(self, name: str, is_package: bool, modules: set[str]) -> None:
        self.name = name
        self.package = name if is_package else name.rpartition(".")[0]
        self.modules = modules
        self.functions: list[str] = []
        self.type_checking = False
        self.edges: list[Edge] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        # The nearest project module the name designates: `provisioner.x.y` may be a name in x.
        while target and target not in self.modules:
            target = target.rpartition(".")[0]
        if target and target.split(".")[0] == PACKAGE:
            where = f"in function {self.functions[-1]}" if self.functions else "module level"
            if self.type_checking:
                where += ", under TYPE_CHECKING"
            edge = Edge(self.name, target, node.lineno, where)
            if edge not in self.edges:  # `from x import a, b` is one edge
                self.edges.append(edge)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            if COUNT_TYPE_CHECKING:
                outer, self.type_checking = self.type_checking, True
                for child in node.body:
                    self.visit(child)
                self.type_checking = outer
            for child in node.orelse:  # the `else:` of `if TYPE_CHECKING:` is executed
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            submodule = f"{module}.{alias.name}"
            self._add(submodule if submodule in self.modules else module, node)


def import_graph() -> tuple[dict[str, set[str]], list[Edge]]:
    modules = _module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    edges: list[Edge] = []
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", set(modules))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for edge in collector.edges:
            graph[name].add(edge.target)
            edges.append(edge)
    return graph, edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components that are cycles (more than one module, or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _shortest_cycle(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node] & members):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is in no cycle")


def describe_cycles(graph: dict[str, set[str]], edges: list[Edge]) -> list[str]:
    where: dict[tuple[str, str], list[Edge]] = {}
    for edge in edges:
        where.setdefault((edge.source, edge.target), []).append(edge)
    paths = _module_names()
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        lines.append(f"cycle among {len(component)} module(s): {', '.join(component)}")
        seen: set[tuple[str, ...]] = set()
        for start in component:
            chain = _shortest_cycle(graph, start, members)
            # The same cycle seen from another of its modules is listed once.
            rotation = min(tuple(chain[i:-1] + chain[:i]) for i in range(len(chain) - 1))
            if rotation in seen:
                continue
            seen.add(rotation)
            lines.append("  " + " -> ".join(chain))
            for source, target in pairwise(chain):
                for edge in where[(source, target)]:
                    path = paths.get(edge.source)
                    shown = path.relative_to(ROOT.parent).as_posix() if path else edge.source
                    lines.append(f"      {shown}:{edge.line} imports {target} ({edge.where})")
    return lines


def test_the_graph_is_real() -> None:
    """A parser that found nothing would pass the cycle test: the graph must be the project's."""
    graph, edges = import_graph()
    assert len(graph) >= 50
    assert len(edges) >= 200
    assert "provisioner.validate" in graph["provisioner.commands.declarations"]
    assert any(edge.where.startswith("in function") for edge in edges), "function-level imports"
    assert any("TYPE_CHECKING" in edge.where for edge in edges) == COUNT_TYPE_CHECKING
    assert all(edge.target in graph for edge in edges)


def test_a_cycle_is_reported_as_a_chain() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    edges = [Edge(s, t, 1, "module level") for s, targets in graph.items() for t in targets]
    assert strongly_connected(graph) == [["a", "b", "c"], ["d"]]
    report = [line.strip() for line in describe_cycles(graph, edges) if "->" in line]
    assert report == ["a -> b -> c -> a", "d -> d"]


def test_no_import_cycles() -> None:
    graph, edges = import_graph()
    cycles = describe_cycles(graph, edges)
    assert not cycles, "import cycles (fix by moving the shared piece down):\n" + "\n".join(cycles)
