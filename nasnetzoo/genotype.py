"""The genotype: one schema for the cells of both NAS lineages.

A cell has two inputs (states 0 and 1) and a list of nodes; node ``k`` is state ``k + 2`` and
combines two edges, each an ``(op, input_state)`` pair.  The cell output concatenates the states
listed in ``concat`` along channels.  Nodes sum their edges, except where the cell's optional
``combine`` list says ``concat`` (NASNet's search space lets a block concatenate its two op outputs
along channels; only the ``nasnet`` family builder supports it).

* ``family="darts"`` (DARTS, P-DARTS, PC-DARTS, SNAS, GDAS): state 0 is the output of the cell
  two back, state 1 the previous cell's; in a reduction cell the ops reading states 0 and 1 use
  stride 2.  Op names are DARTS primitives (``sep_conv_3x3``, ``none`` = zero, ...).
* ``family="nasnet"`` (NASNet-A, AmoebaNet-A, PNASNet-5, ENAS): TF-slim order, state 0 is the
  *current* input and state 1 the previous one; op names are the TF-slim ones
  (``separable_5x5_2``, ``none`` = identity, ...).  When a file omits ``concat`` it defaults to the
  states that no node reads, as in TF-slim.

Genotypes parse from a YAML/JSON file, a dict, or the ``Genotype(normal=[...], ...)`` string of the
DARTS code bases (without ``eval``), and serialise back losslessly.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import GenotypeError, UnknownOpError
from .fileio import write_text
from .ops.registry import FAMILIES, get_op_factory
from .yamlio import dump_yaml, load_yaml, read_text

CELL_TYPES = ("normal", "reduce")
EDGES_PER_NODE = 2
COMBINES = ("add", "concat")   # how a node merges its two edges


@dataclass(frozen=True)
class Edge:
    op: str
    input: int

    def to_list(self) -> list:
        return [self.op, self.input]


@dataclass(frozen=True)
class Cell:
    """Nodes (each a pair of edges), the states concatenated into the output, and per node how
    its two edges merge (``combine``; empty means every node adds, the published cells' case)."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]
    combine: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # One canonical form, so a cell written with and without an all-"add" list compares equal.
        if not self.combine:
            object.__setattr__(self, "combine", ("add",) * len(self.nodes))
        else:
            object.__setattr__(self, "combine", tuple(self.combine))

    @property
    def adds_only(self) -> bool:
        return all(c == "add" for c in self.combine)

    @property
    def num_states(self) -> int:
        return len(self.nodes) + 2

    @property
    def edges(self) -> list[Edge]:
        return [edge for node in self.nodes for edge in node]

    def unused_states(self) -> tuple[int, ...]:
        """States that no node reads, in order (TF-slim's default output)."""
        used = {edge.input for edge in self.edges}
        return tuple(s for s in range(self.num_states) if s not in used)

    def to_dict(self) -> dict:
        out = {"nodes": [[edge.to_list() for edge in node] for node in self.nodes],
               "concat": list(self.concat)}
        if not self.adds_only:
            out["combine"] = list(self.combine)
        return out


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell of one family.  Equality ignores name and provenance."""

    normal: Cell
    reduce: Cell
    family: str = "darts"
    name: str = field(default="", compare=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        validate(self)

    def cell(self, cell_type: str) -> Cell:
        if cell_type not in CELL_TYPES:
            raise GenotypeError(f"unknown cell type {cell_type!r}; use 'normal' or 'reduce'.")
        return getattr(self, cell_type)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, family: Optional[str] = None) -> "Genotype":
        return from_dict(data, family=family)

    @classmethod
    def from_string(cls, text: str, *, family: str = "darts") -> "Genotype":
        return from_string(text, family=family)

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "Genotype":
        return from_file(path)

    @classmethod
    def parse(cls, value: Union["Genotype", Mapping, str, Path]) -> "Genotype":
        return parse(value)

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["family"] = self.family
        out["normal"] = self.normal.to_dict()
        out["reduce"] = self.reduce.to_dict()
        if self.provenance:
            out["provenance"] = _plain(self.provenance)
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def save(self, path: Union[str, Path]) -> Path:
        """Write the genotype as YAML (or JSON for a ``.json`` path), atomically."""
        path = Path(path)
        text = (json.dumps(self.to_dict(), indent=2) + "\n" if path.suffix == ".json"
                else self.to_yaml())
        return write_text(path, text)

    def to_string(self) -> str:
        """The DARTS code bases' ``Genotype(normal=[...], normal_concat=..., ...)`` form."""
        def pairs(cell: Cell) -> str:
            return "[" + ", ".join(f"({e.op!r}, {e.input})" for e in cell.edges) + "]"

        def concat(cell: Cell) -> str:
            c = cell.concat
            if len(c) > 1 and list(c) == list(range(c[0], c[-1] + 1)):
                return f"range({c[0]}, {c[-1] + 1})"
            return "[" + ", ".join(map(str, c)) + "]"

        def combine(cell_type: str) -> str:
            cell = self.cell(cell_type)
            return "" if cell.adds_only else f", {cell_type}_combine={list(cell.combine)!r}"

        family = "" if self.family == "darts" else f", family={self.family!r}"
        return (f"Genotype(normal={pairs(self.normal)}, normal_concat={concat(self.normal)}{combine('normal')}, "
                f"reduce={pairs(self.reduce)}, reduce_concat={concat(self.reduce)}{combine('reduce')}{family})")

    def __str__(self) -> str:
        return self.to_string()


# ==================================================================== validation
def validate(genotype: Genotype) -> None:
    """Raise GenotypeError naming the cell, node and value of the first problem found."""
    if genotype.family not in FAMILIES:
        raise GenotypeError(
            f"unknown genotype family {genotype.family!r}; use one of {', '.join(FAMILIES)}.")
    for cell_type in CELL_TYPES:
        cell = getattr(genotype, cell_type)
        if not isinstance(cell, Cell):
            raise GenotypeError(f"{cell_type} cell: expected a Cell, got {type(cell).__name__}.")
        _validate_cell(cell, cell_type, genotype.family)


def _validate_cell(cell: Cell, cell_type: str, family: str) -> None:
    if not cell.nodes:
        raise GenotypeError(f"{cell_type} cell has no nodes; a cell needs at least one node.")
    for k, node in enumerate(cell.nodes):
        where = f"{cell_type} cell, node {k + 2}"
        if len(node) != EDGES_PER_NODE:
            raise GenotypeError(
                f"{where}: has {len(node)} edge(s) {[e.to_list() for e in node]}; every node sums "
                f"exactly {EDGES_PER_NODE} (op, input) edges.")
        for edge in node:
            if not isinstance(edge.op, str):
                raise GenotypeError(f"{where}: op {edge.op!r} is not a string.")
            try:
                get_op_factory(edge.op, family)
            except UnknownOpError as err:
                raise UnknownOpError(f"{where}: {err}") from None
            if isinstance(edge.input, bool) or not isinstance(edge.input, int):
                raise GenotypeError(f"{where}: input {edge.input!r} of op {edge.op!r} is not an "
                                    "integer state index.")
            if not 0 <= edge.input < k + 2:
                hint = ("it points forward, to this node or a later one" if edge.input >= k + 2
                        else "state indices are never negative")
                raise GenotypeError(
                    f"{where}: input {edge.input} of op {edge.op!r} is out of range ({hint}); "
                    f"node {k + 2} may read states 0..{k + 1}.")
    if not cell.concat:
        raise GenotypeError(f"{cell_type} cell: concat is empty; list the states (0..{cell.num_states - 1}) "
                            "whose outputs are concatenated.")
    for s in cell.concat:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < cell.num_states:
            raise GenotypeError(f"{cell_type} cell: concat entry {s!r} is out of range; "
                                f"valid states are 0..{cell.num_states - 1}.")
    if len(set(cell.concat)) != len(cell.concat):
        raise GenotypeError(f"{cell_type} cell: concat {list(cell.concat)} repeats a state.")
    if len(cell.combine) != len(cell.nodes):
        raise GenotypeError(f"{cell_type} cell: combine {list(cell.combine)} has {len(cell.combine)} entries for "
                            f"{len(cell.nodes)} nodes; give one ('add' or 'concat') per node.")
    for k, how in enumerate(cell.combine):
        if how not in COMBINES:
            raise GenotypeError(f"{cell_type} cell, node {k + 2}: combine {how!r} is not one of "
                                f"{', '.join(COMBINES)}.")
        if how == "concat" and family != "nasnet":
            raise GenotypeError(f"{cell_type} cell, node {k + 2}: combine 'concat' (NASNet's search space) is "
                                f"built only for family 'nasnet'; {family!r} cells add their two edges.")


# ==================================================================== parsing
def _edge(value: Any, where: str) -> Edge:
    if isinstance(value, Mapping):
        if set(value) != {"op", "input"}:
            raise GenotypeError(f"{where}: an edge mapping needs exactly the keys 'op' and 'input', "
                                f"got {sorted(value)}.")
        return Edge(value["op"], value["input"])
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and isinstance(value[0], str):
        # old GDAS genotypes carry a third element, the edge's search weight: dropped.
        return Edge(value[0], value[1])
    raise GenotypeError(f"{where}: cannot read {value!r} as an edge; write it as [op, input], "
                        "e.g. ['sep_conv_3x3', 1].")


def _is_edge(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, (list, tuple)) and len(value) in (2, 3) and isinstance(value[0], str))


def _concat(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, range):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise GenotypeError(f"{where}: concat {value!r} is not a list of state indices.")


def _combine(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise GenotypeError(f"{where}: combine {value!r} is not a list of 'add' / 'concat', one per node.")


def _cell_from(value: Any, concat: Any, cell_type: str, family: str, combine: Any = None) -> Cell:
    """Read a cell from ``{'nodes': ..., 'concat': ..., 'combine': ...}`` or a DARTS flat list of pairs."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"nodes", "concat", "combine"}
        if unknown:
            raise GenotypeError(f"{cell_type} cell: unknown key(s) {sorted(unknown)}; "
                                "a cell has 'nodes', 'concat' and optionally 'combine'.")
        if "nodes" not in value:
            raise GenotypeError(f"{cell_type} cell: missing 'nodes'.")
        nodes_raw, concat = value["nodes"], value.get("concat", concat)
        combine = value.get("combine", combine)
    else:
        nodes_raw = value
    if not isinstance(nodes_raw, (list, tuple)):
        raise GenotypeError(f"{cell_type} cell: expected a list of nodes, got {nodes_raw!r}.")
    if nodes_raw and all(_is_edge(item) for item in nodes_raw):
        # DARTS flat form: pairs 2k and 2k+1 feed node k + 2.
        if len(nodes_raw) % EDGES_PER_NODE:
            raise GenotypeError(
                f"{cell_type} cell: {len(nodes_raw)} edges in the flat DARTS form, which needs an "
                f"even count (two per node); node {len(nodes_raw) // 2 + 2} has one edge.")
        grouped = [nodes_raw[i:i + EDGES_PER_NODE] for i in range(0, len(nodes_raw), EDGES_PER_NODE)]
    else:
        grouped = nodes_raw
    nodes = []
    for k, node in enumerate(grouped):
        where = f"{cell_type} cell, node {k + 2}"
        if not isinstance(node, (list, tuple)):
            raise GenotypeError(f"{where}: expected a list of (op, input) edges, got {node!r}.")
        nodes.append(tuple(_edge(edge, where) for edge in node))
    cell_nodes = tuple(nodes)
    if concat is None:
        if family != "nasnet":
            raise GenotypeError(f"{cell_type} cell: missing concat (the states whose outputs form "
                                "the cell output, e.g. [2, 3, 4, 5]).")
        concat_t = Cell(cell_nodes, (0,)).unused_states()
    else:
        concat_t = _concat(concat, f"{cell_type} cell")
    return Cell(cell_nodes, concat_t, _combine(combine, f"{cell_type} cell"))


_TOP_KEYS = {"name", "family", "normal", "reduce", "normal_concat", "reduce_concat", "normal_combine",
             "reduce_combine", "provenance"}


def from_dict(data: Mapping[str, Any], *, family: Optional[str] = None) -> Genotype:
    if not isinstance(data, Mapping):
        raise GenotypeError(f"a genotype must be a mapping with 'normal' and 'reduce' cells, got "
                            f"{type(data).__name__}.")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise GenotypeError(f"unknown genotype key(s) {sorted(unknown)}; valid keys are "
                            f"{', '.join(sorted(_TOP_KEYS))}.")
    family = family or data.get("family", "darts")
    if family not in FAMILIES:
        raise GenotypeError(f"unknown genotype family {family!r}; use one of {', '.join(FAMILIES)}.")
    cells = {}
    for cell_type in CELL_TYPES:
        if cell_type not in data:
            raise GenotypeError(f"genotype has no {cell_type!r} cell.")
        cells[cell_type] = _cell_from(data[cell_type], data.get(f"{cell_type}_concat"),
                                      cell_type, family, data.get(f"{cell_type}_combine"))
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        raise GenotypeError("'provenance' must be a mapping (paper, repo, file, symbol, notes).")
    return Genotype(cells["normal"], cells["reduce"], family, data.get("name") or "", dict(provenance))


_GENOTYPE_CALL = re.compile(r"Genotype\s*\(")


def from_string(text: str, *, family: str = "darts") -> Genotype:
    """Parse ``Genotype(normal=[...], normal_concat=range(2, 6), reduce=[...], ...)`` safely.

    Accepts what users paste from search logs: a leading ``NAME =`` or log prefix, ``range(a, b)``
    or list concats, positional arguments, AutoDL's per-node grouping.  Nothing is evaluated:
    the text is read as a Python syntax tree of literals.
    """
    match = _GENOTYPE_CALL.search(text)
    if not match:
        raise GenotypeError(f"no 'Genotype(...)' found in {_clip(text)!r}; expected e.g. "
                            "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), "
                            "reduce=[...], reduce_concat=range(2, 6)).")
    call_text = _balanced(text, match.start(), match.end() - 1)
    try:
        tree = ast.parse(call_text, mode="eval").body
    except SyntaxError as err:
        raise GenotypeError(f"cannot parse {_clip(call_text)!r}: {err.msg}.") from None
    assert isinstance(tree, ast.Call)
    names = ["normal", "normal_concat", "reduce", "reduce_concat"]   # then keywords: *_combine, family
    if len(tree.args) > len(names):
        raise GenotypeError(f"Genotype(...) takes at most {len(names)} positional fields "
                            f"({', '.join(names)}), got {len(tree.args)}.")
    fields: dict[str, Any] = {n: _literal(a, n) for n, a in zip(names, tree.args)}
    for kw in tree.keywords:
        if kw.arg is None:
            raise GenotypeError("Genotype(**...) cannot be read; write the fields out.")
        fields[kw.arg] = _literal(kw.value, kw.arg)
    family = fields.pop("family", family)
    # AutoDL adds connectivity fields that carry no extra information for these cells.
    for extra in ("connectN", "connects"):
        fields.pop(extra, None)
    return from_dict(fields, family=family)


def _balanced(text: str, start: int, open_index: int) -> str:
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    raise GenotypeError(f"unbalanced brackets in {_clip(text[start:])!r}; was the text cut short?")


def _literal(node: ast.AST, field_name: str) -> Any:
    """Literals, lists/tuples of them, and ``range(a[, b])``; anything else is refused."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, field_name) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 2):
        bounds = [_literal(a, field_name) for a in node.args]
        if all(isinstance(b, int) for b in bounds):
            return list(range(*bounds))
    raise GenotypeError(f"field {field_name!r}: cannot read {ast.unparse(node)!r}; only literal "
                        "lists of (op, input) pairs and range(a, b) are accepted (nothing is evaluated).")


def from_file(path: Union[str, Path]) -> Genotype:
    path = Path(path)
    if not path.is_file():
        raise GenotypeError(f"genotype file {str(path)!r} does not exist.")
    text = read_text(path, GenotypeError, "genotype file")
    if path.suffix in (".py", ".txt", ".log") or (_GENOTYPE_CALL.search(text) and not text.lstrip().startswith("{")
                                                   and "nodes:" not in text):
        return from_string(text)
    if path.suffix != ".json":
        data = load_yaml(text, f"genotype file {str(path)!r}", GenotypeError)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype file {str(path)!r} is not valid JSON: {err}") from None
    try:
        return from_dict(data)
    except GenotypeError as err:
        raise type(err)(f"{path}: {err}") from None


def parse(value: Union[Genotype, Mapping, str, Path]) -> Genotype:
    """A Genotype from a Genotype, dict, file path or ``Genotype(...)`` string."""
    if isinstance(value, Genotype):
        return value
    if isinstance(value, Mapping):
        return from_dict(value)
    if isinstance(value, Path):
        return from_file(value)
    if isinstance(value, str):
        if _GENOTYPE_CALL.search(value):
            return from_string(value)
        return from_file(value)
    raise GenotypeError(f"cannot read a genotype from a {type(value).__name__}.")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
