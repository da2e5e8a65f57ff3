"""The modules of ``nasnetzoo`` import one another in one direction only: no import cycles.

The graph is read from the source with ``ast`` (nothing is imported).  It counts every import
statement in a module, at module level and inside functions: an import deferred into a function
still makes the two modules depend on each other, it only hides the cycle from Python's import
machinery, so it counts.  Imports under ``if TYPE_CHECKING:`` are left out (they never run).
The packages a module sits in are not counted as its imports (Python imports them first, but
that is not a dependency of the module's code).
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path


PACKAGE = "nasnetzoo"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module under ``root`` (packages by __init__)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module that ``from <node.module> import ...`` names."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]  # a module's relative imports start at its package
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _base(module, is_package, node)
            # ``from pkg import name`` imports module pkg.name if there is one, else a name of pkg.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (each one holds at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first), closed."""
    start, members = component[0], set(component)
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, node, start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return component


def describe_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per tangle: a shortest cycle, then (for more than two modules) every import inside it."""
    lines = []
    for component in strongly_connected(graph):
        line = " -> ".join(shortest_cycle(graph, component))
        if len(component) > 2:
            edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & set(component))]
            line += f"   (all of: {', '.join(component)}; imports: {'; '.join(edges)})"
        lines.append(line)
    return lines


# ------------------------------------------------------------------ the checker checks itself
def test_reader_resolves_relative_absolute_and_deferred_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("import nasnetzoo.sub.b\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from .c import T\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..c import h\n")
    (pkg / "sub" / "d.py").write_text("from nasnetzoo.sub import e\nimport nasnetzoo.genotype\n")
    (pkg / "sub" / "e.py").write_text("def k():\n    from . import d\n")
    (pkg / "c.py").write_text("from .a import f as _f\nimport os\n")
    graph = import_graph(pkg)
    assert graph == {"nasnetzoo": {"nasnetzoo.a"}, "nasnetzoo.a": {"nasnetzoo.sub.b"},
                     "nasnetzoo.sub": set(), "nasnetzoo.sub.b": {"nasnetzoo.c"},
                     "nasnetzoo.sub.d": {"nasnetzoo.sub.e", "nasnetzoo"}, "nasnetzoo.sub.e": {"nasnetzoo.sub.d"},
                     "nasnetzoo.c": {"nasnetzoo.a"}}
    assert strongly_connected(graph) == [["nasnetzoo.a", "nasnetzoo.c", "nasnetzoo.sub.b"],
                                         ["nasnetzoo.sub.d", "nasnetzoo.sub.e"]]
    assert describe_cycles(graph) == ["nasnetzoo.a -> nasnetzoo.sub.b -> nasnetzoo.c -> nasnetzoo.a   "
                                      "(all of: nasnetzoo.a, nasnetzoo.c, nasnetzoo.sub.b; imports: "
                                      "nasnetzoo.a -> nasnetzoo.sub.b; nasnetzoo.c -> nasnetzoo.a; "
                                      "nasnetzoo.sub.b -> nasnetzoo.c)",
                                      "nasnetzoo.sub.d -> nasnetzoo.sub.e -> nasnetzoo.sub.d"]


def test_no_import_cycles_in_nasnetzoo():
    graph = import_graph()
    assert len(graph) > 50 and "nasnetzoo.factory" in graph["nasnetzoo"]
    cycles = describe_cycles(graph)
    assert not cycles, "import cycles in nasnetzoo/ (break each one):\n  " + "\n  ".join(cycles)
