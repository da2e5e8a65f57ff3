"""The modules of ``nasnetzoo`` import one another in one direction only: no import cycles, and the
packages in a declared order of layers (:data:`LAYERS`).  The one checker of the package's imports.

The graph is read from the source with ``ast`` (nothing is imported).  It counts every import
statement in a module, at module level and inside functions: an import deferred into a function
still makes the two modules depend on each other, it only hides the cycle from Python's import
machinery, so it counts.  So do the dynamic imports the source spells out: ``import_module("x")``
with a literal name, and ``"module:attr"`` strings (``"nasnetzoo.a.b:f"``, or ``".b:f"`` relative
to the module's package) that a table resolves later.  Imports under ``if TYPE_CHECKING:`` are
left out (they never run).  The packages a module sits in are not counted as its imports (Python
imports them first, but that is not a dependency of the module's code).
"""
from __future__ import annotations

import ast
import re
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


REFERENCE = re.compile(r"^(\.*)([A-Za-z_][\w.]*)?:[A-Za-z_]\w*$")   # "pkg.mod:attr" or ".mod:attr"


def _dynamic_targets(module: str, is_package: bool, tree: ast.AST) -> list[str]:
    """The modules that ``import_module("literal")`` calls and ``"module:attr"`` strings name."""
    found = []
    for node in _import_nodes_and_constants(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0] if node.args else None
            if name == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(_resolve_dotted(module, is_package, arg.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REFERENCE.match(node.value)
            if match and (match.group(1) or (match.group(2) or "").startswith(PACKAGE + ".")):
                found.append(_resolve_dotted(module, is_package, match.group(1) + (match.group(2) or "")))
    return [target for target in found if target]


def _resolve_dotted(module: str, is_package: bool, name: str) -> str:
    """``name`` as an absolute module name (``.x`` and ``..x`` relative to ``module``'s package)."""
    level = len(name) - len(name.lstrip("."))
    if not level:
        return name
    return _base(module, is_package, ast.ImportFrom(module=name[level:] or None, names=[], level=level))


def _import_nodes_and_constants(tree: ast.AST):
    """Calls and string constants, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Call, ast.Constant)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``module`` imports (statically or by a spelled-out name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    groups = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            groups.append([alias.name for alias in node.names])
        else:
            base = _base(module, is_package, node)
            # ``from pkg import name`` imports module pkg.name if there is one, else a name of pkg.
            groups.append([f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names])
    groups.append(_dynamic_targets(module, is_package, tree))
    for targets in groups:
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


# ------------------------------------------------------------------ layers
# Lowest first; a module may import its own layer and those below it, never one above.  Read from
# the real graph: the core files, the ops, the cell descriptions and the table of the zoo, the
# networks, the weights format, the factory (``nasnetzoo.load``), the hub, what every pipeline shares
# (data, runs), retraining, the searches (which use only train.engine of retraining), the studies
# (searches and retrains compared), the exporters, the CLI.
LAYERS = [
    ("core", ["_version", "errors", "yamlio", "fileio", "bounds", "cli_errors", "text_table", "threads",
              "recipe_file", "profile", "safe_paths"]),
    ("ops", ["ops"]),
    ("cells", ["genotype", "registry", "plot"]),
    ("models", ["models"]),
    ("weights", ["weights"]),
    ("factory", ["factory", "", "timm"]),   # "": the package's own __init__ (nasnetzoo.load and friends)
    ("cli vocabulary", ["cli_options"]),    # the flags every command shares (they complete model names)
    ("hub", ["hub"]),
    ("shared", ["data", "runs"]),
    ("train", ["train"]),
    ("search", ["search"]),
    ("study", ["study"]),                    # studies run searches and retrains (train.runner) alike
    ("export", ["export"]),
    ("cli", ["cli", "__main__"]),
]
# Of retraining, the searches use the training engine alone (the RL search trains its children with it).
SEARCH_MAY_USE_OF_TRAIN = {"nasnetzoo.train", "nasnetzoo.train.engine"}


def layer_of(module: str, layers=LAYERS) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, (_, members) in enumerate(layers):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer of LAYERS: add its package to one")


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    lines = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if layer_of(target, layers) > layer_of(module, layers):
                lines.append(f"{module} ({layers[layer_of(module, layers)][0]}) imports {target} "
                             f"({layers[layer_of(target, layers)][0]})")
    return lines


def test_reader_follows_dynamic_imports_and_module_attr_strings(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("TABLE = {'a': 'nasnetzoo.sub.a:run', 'b': '.b:run', 'x': 'os.path:join',"
                                             " 'text': 'see nasnetzoo.sub.a:run'}\n")
    (pkg / "sub" / "a.py").write_text("import importlib\ndef f():\n    return importlib.import_module('nasnetzoo.c')\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "c.py").write_text("REF = '..sub.b:run'\n")   # above the package: not a module
    graph = import_graph(pkg)
    assert graph["nasnetzoo.sub"] == {"nasnetzoo.sub.a", "nasnetzoo.sub.b"}
    assert graph["nasnetzoo.sub.a"] == {"nasnetzoo.c"} and graph["nasnetzoo.sub.b"] == set()
    layers = [("low", ["c"]), ("high", ["sub"])]
    assert layer_violations(graph, layers) == []
    (pkg / "c.py").write_text("def g():\n    from .sub import b\n")
    assert layer_violations(import_graph(pkg), layers) == ["nasnetzoo.c (low) imports nasnetzoo.sub.b (high)"]


def test_packages_import_in_the_declared_layers():
    graph = import_graph()
    assert "nasnetzoo.search.strategies.darts" in graph["nasnetzoo.search.strategies"]
    assert "nasnetzoo.export.ort" in graph["nasnetzoo.export.runtimes"]   # a ".ort:load_ort_cpu" string
    bad = layer_violations(graph)
    assert not bad, "imports against the layers of LAYERS (lower layers never import higher ones):\n  " + \
        "\n  ".join(bad)


def test_the_searches_use_only_the_training_engine_of_retraining():
    graph = import_graph()
    used = {(m, t) for m, targets in graph.items() if m.startswith("nasnetzoo.search")
            for t in targets if t.startswith("nasnetzoo.train") and t not in SEARCH_MAY_USE_OF_TRAIN}
    assert not used, sorted(used)


def test_export_keeps_its_one_way_structure():
    graph = import_graph()
    assert "nasnetzoo.export.onnx_export" not in graph["nasnetzoo.export.trt"]
    assert "nasnetzoo.export.trt" not in graph["nasnetzoo.export.checks"]
