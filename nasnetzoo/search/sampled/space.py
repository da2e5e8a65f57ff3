"""The cell spaces of the sampled searches: B blocks per cell, five decisions per block.

NASNet's space (Zoph et al. 2018) has a normal and a reduction cell; AmoebaNet's (Real et al. 2019)
is the same with its own ops and addition only; PNAS's (Liu et al. 2018) has one cell type, used
as both the normal and the reduction cell (``shared``), and grows its cells one block at a time
(``min_blocks=1``: an architecture may hold fewer than ``num_blocks`` blocks per cell).

Each block picks (1) a hidden state, (2) a second hidden state, from the cell's two inputs
(``h_i`` = state 0, ``h_{i-1}`` = state 1, TF order) and the blocks before it; (3) an op for the
first and (4) an op for the second; (5) how to combine the two results (add, or concatenate along
channels).  A proposer makes these ``cells x B x 5`` decisions in that order, normal cell first.

What a space's cells are beyond their blocks is the preset's too, so every strategy over it (random
search, evolution, PNAS) builds the same child from the same actions: the **cell output**
(:data:`CELL_OUTPUTS`: NASNet's and AmoebaNet's cells concatenate every state that no block reads,
as TF-slim's NASNet cells do; PNAS's concatenates every block's output, as TF-slim's
``PNasNetNormalCell`` does, ``used_hiddenstates=[1, 1, 0, 0, 0, 0, 0]``) and the **layout** of the
child network (:attr:`SearchSpace.layout`, child keys that a recipe's ``child`` section overrides:
PNASNet's, no extra reduction cells and the first cell of each stage at stride 2).

An architecture is a flat sequence of integer actions; :meth:`SearchSpace.to_genotype` turns it
into a ``family="nasnet"`` :class:`~nasnetzoo.genotype.Genotype`, which the TF-slim builder
(:class:`~nasnetzoo.models.nasnet.NASNet`) builds, and :meth:`SearchSpace.encode` goes back.

Ops are the zoo's TF-slim op names.  :data:`PAPER_OPS` is NASNet's list (Zoph et al. 2018,
Sec. 3: 13 ops); 5x5 average pooling, which some write-ups add, is ``avg_pool_5x5`` and can be
listed in a recipe's ``ops``.  :data:`SPACES` names the three presets a recipe's ``space`` picks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import random
from typing import Any, Mapping, Optional, Sequence

from ...errors import ConfigError, did_you_mean
from ...genotype import CELL_TYPES, COMBINES, Cell, Edge, Genotype
from ...ops.registry import op_names

# The paper's 13 ops as zoo op names, in the paper's order.
PAPER_OPS = (
    "none",             # identity
    "1x3_3x1",          # 1x3 then 3x1 convolution
    "1x7_7x1",          # 1x7 then 7x1 convolution
    "dilated_3x3",      # 3x3 dilated convolution
    "avg_pool_3x3",
    "max_pool_3x3",
    "max_pool_5x5",
    "max_pool_7x7",
    "conv_1x1",
    "conv_3x3",
    "separable_3x3_2",  # depthwise-separable, applied twice (paper A.4)
    "separable_5x5_2",
    "separable_7x7_2",
)

# AmoebaNet's 8 ops (Real et al. 2019, Sec. 3): identity; 3x3, 5x5, 7x7 separable convolutions;
# 3x3 average and max pooling; 3x3 dilated separable convolution; 1x7 then 7x1 convolution.  The zoo
# has no dilated *separable* op: ``dilated_3x3`` (a C/4 bottleneck around a 3x3 convolution of
# rate 2) stands in for it.  The cell adds the two results of a block (the tpu code's BaseCell).
AMOEBANET_OPS = ("none", "separable_3x3_2", "separable_5x5_2", "separable_7x7_2", "avg_pool_3x3",
                 "max_pool_3x3", "dilated_3x3", "1x7_7x1")
# PNAS's 8 ops (Liu et al. 2018, Sec. 3.1): 3x3, 5x5, 7x7 depthwise-separable convolutions, 1x7
# then 7x1 convolution, identity, 3x3 average and max pooling, 3x3 dilated convolution; add only.
PNAS_OPS = ("separable_3x3_2", "separable_5x5_2", "separable_7x7_2", "1x7_7x1", "none", "avg_pool_3x3",
            "max_pool_3x3", "dilated_3x3")

# How a cell's output is formed: "unused" concatenates the states no block reads (TF-slim's NASNet
# cells); "every block" concatenates every block's output (TF-slim's PNasNetNormalCell).
CELL_OUTPUTS = ("unused", "every block")
# PNASNet's network layout as child keys (TF-slim _build_pnasnet_base: the reduction cells are the
# first cell of each later stage at stride 2, not extra cells; skip_reduction_layer_input=1).
PNASNET_LAYOUT = {"reduction": "stride", "skip_reduction_layer_input": True}


def check_ops(ops: Sequence[str], what: str) -> tuple[str, ...]:
    """``ops`` as a tuple, refused in one line unless they are nasnet-family ops without repeats
    (``what`` names the space in the message)."""
    ops = tuple(ops)
    known = set(op_names("nasnet"))
    for op in ops:
        if op not in known:
            raise ConfigError(f"{what} op {op!r} is not a nasnet-family op.{did_you_mean(op, known)} "
                              f"Known: {', '.join(sorted(known))}.")
    if not ops or len(set(ops)) != len(ops):
        raise ConfigError(f"{what} ops {list(ops)} must be a non-empty list without repeats.")
    return ops


@dataclass(frozen=True)
class Preset:
    """A named space: its ops and combines, one shared cell type or two, the fewest blocks a cell may
    have (None: all), how a cell's output is formed, and the child layout its networks use."""

    ops: tuple
    combines: tuple
    shared: bool = False
    min_blocks: Optional[int] = None
    cell_output: str = "unused"
    layout: Mapping[str, Any] = field(default_factory=dict)   # child keys; empty: ChildConfig's (NASNet's)


SPACES = {
    "nasnet": Preset(PAPER_OPS, ("add", "concat")),
    "amoebanet": Preset(AMOEBANET_OPS, ("add",)),
    "pnas": Preset(PNAS_OPS, ("add",), shared=True, min_blocks=1, cell_output="every block",
                   layout=PNASNET_LAYOUT),
}
DECISIONS_PER_BLOCK = ("input", "input", "op", "op", "combine")


@dataclass(frozen=True)
class Decision:
    """One softmax of the controller: which cell and block, what kind, how many choices."""

    cell: str          # "normal" | "reduce"
    block: int         # 0..B-1
    kind: str          # "input" | "op" | "combine"
    num_choices: int


class SearchSpace:
    """The cell space over ``ops`` with ``num_blocks`` blocks and the ``combines`` methods.

    ``shared``: one cell type, used as the normal and the reduction cell (PNAS); its architectures
    hold the decisions of that one cell.  ``min_blocks``: the fewest blocks a cell may have (default
    ``num_blocks``: every cell has them all).  ``cell_output``: one of :data:`CELL_OUTPUTS`.
    ``layout``: the child keys of the network layout the space's cells are built in (a recipe's
    ``child`` section overrides them)."""

    def __init__(self, ops: Sequence[str] = PAPER_OPS, num_blocks: int = 5,
                 combines: Sequence[str] = COMBINES, *, shared: bool = False,
                 min_blocks: Optional[int] = None, cell_output: str = "unused",
                 layout: Optional[Mapping[str, Any]] = None) -> None:
        ops, combines = check_ops(ops, "search-space"), tuple(combines)
        if not combines or len(set(combines)) != len(combines) or not set(combines) <= set(COMBINES):
            raise ConfigError(f"search-space combines {list(combines)} must be a non-empty subset of "
                              f"{list(COMBINES)}.")
        if int(num_blocks) < 1:
            raise ConfigError(f"num_blocks={num_blocks} must be at least 1 (NASNet uses B=5).")
        self.ops, self.combines, self.num_blocks = ops, combines, int(num_blocks)
        if cell_output not in CELL_OUTPUTS:
            raise ConfigError(f"cell_output={cell_output!r} is not one of {', '.join(map(repr, CELL_OUTPUTS))}.")
        self.shared, self.cell_output, self.layout = bool(shared), cell_output, dict(layout or {})
        self.min_blocks = self.num_blocks if min_blocks is None else int(min_blocks)
        if not 1 <= self.min_blocks <= self.num_blocks:
            raise ConfigError(f"min_blocks={min_blocks} must be between 1 and num_blocks={self.num_blocks}.")
        self.cell_types: tuple[str, ...] = ("normal",) if self.shared else tuple(CELL_TYPES)
        self.decisions: tuple[Decision, ...] = self.decisions_for(self.num_blocks)

    def decisions_for(self, blocks: int) -> tuple[Decision, ...]:
        """The decisions of an architecture with ``blocks`` blocks per cell, in order."""
        return tuple(Decision(cell, b, kind, self._choices(kind, b))
                     for cell in self.cell_types for b in range(blocks) for kind in DECISIONS_PER_BLOCK)

    @classmethod
    def preset(cls, name: str, *, ops: Optional[Sequence[str]] = None, num_blocks: int = 5,
               combines: Optional[Sequence[str]] = None) -> "SearchSpace":
        """One of :data:`SPACES` (``ops`` / ``combines`` replace the preset's when given)."""
        if name not in SPACES:
            raise ConfigError(f"search space {name!r} is not one of {', '.join(SPACES)}.{did_you_mean(name, SPACES)}")
        preset = SPACES[name]
        return cls(ops or preset.ops, num_blocks, combines or preset.combines, shared=preset.shared,
                   min_blocks=None if preset.min_blocks is None else min(preset.min_blocks, num_blocks),
                   cell_output=preset.cell_output, layout=preset.layout)

    def _choices(self, kind: str, block: int) -> int:
        return {"input": 2 + block, "op": len(self.ops), "combine": len(self.combines)}[kind]

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def max_inputs(self) -> int:
        """Choices of the last block's input decisions (the most any input decision has)."""
        return self.num_blocks + 1

    def size(self) -> int:
        """Number of distinct action sequences (architectures, counting symmetric duplicates)."""
        n = 1
        for d in self.decisions:
            n *= d.num_choices
        return n

    # ---------------------------------------------------------------- actions <-> genotype
    def blocks_of(self, actions: Sequence[int]) -> int:
        """Blocks per cell of an architecture (its length tells), or a ConfigError naming the sizes."""
        per_block = len(self.cell_types) * len(DECISIONS_PER_BLOCK)
        blocks, rest = divmod(len(actions), per_block)
        if rest or not self.min_blocks <= blocks <= self.num_blocks:
            if self.min_blocks == self.num_blocks:
                raise ConfigError(f"an architecture has {self.num_decisions} decisions ({len(self.cell_types)} "
                                  f"cells x {self.num_blocks} blocks x 5); got {len(actions)}.")
            raise ConfigError(f"an architecture has {per_block} decisions per block ({len(self.cell_types)} cells "
                              f"x 5) for {self.min_blocks} to {self.num_blocks} blocks; got {len(actions)}.")
        return blocks

    def check_actions(self, actions: Sequence[int]) -> list[int]:
        actions = [int(a) for a in actions]
        decisions = self.decisions_for(self.blocks_of(actions))
        for t, (a, d) in enumerate(zip(actions, decisions)):
            if not 0 <= a < d.num_choices:
                raise ConfigError(f"decision {t} ({d.cell} cell, block {d.block}, {d.kind}) is {a}; it has "
                                  f"{d.num_choices} choices (0..{d.num_choices - 1}).")
        return actions

    def to_genotype(self, actions: Sequence[int], *, name: str = "",
                    provenance: Optional[Mapping[str, Any]] = None) -> Genotype:
        actions = self.check_actions(actions)
        cells = {}
        blocks = self.blocks_of(actions)
        per_cell = blocks * len(DECISIONS_PER_BLOCK)
        for c, cell_type in enumerate(self.cell_types):
            chunk = actions[c * per_cell:(c + 1) * per_cell]
            nodes, combine = [], []
            for b in range(blocks):
                in1, in2, op1, op2, how = chunk[5 * b:5 * b + 5]
                nodes.append((Edge(self.ops[op1], in1), Edge(self.ops[op2], in2)))
                combine.append(self.combines[how])
            cells[cell_type] = Cell(tuple(nodes), self.output_states(nodes), tuple(combine))
        reduce = cells["normal"] if self.shared else cells["reduce"]
        return Genotype(cells["normal"], reduce, "nasnet", name, dict(provenance or {}))

    def output_states(self, nodes: Sequence) -> tuple[int, ...]:
        """The states that a cell of these blocks concatenates into its output (:attr:`cell_output`)."""
        if self.cell_output == "every block":
            return tuple(range(2, 2 + len(nodes)))
        return Cell(tuple(nodes), (0,)).unused_states()

    def encode(self, genotype: Genotype) -> list[int]:
        """The action sequence of a genotype of this space (the inverse of :meth:`to_genotype`)."""
        if genotype.family != "nasnet":
            raise ConfigError(f"the NASNet search space holds 'nasnet'-family cells, not {genotype.family!r}.")
        actions: list[int] = []
        if self.shared and genotype.normal.nodes != genotype.reduce.nodes:
            raise ConfigError("this space has one cell type for normal and reduction cells; the genotype's differ.")
        for cell_type in self.cell_types:
            cell = genotype.cell(cell_type)
            if not self.min_blocks <= len(cell.nodes) <= self.num_blocks:
                raise ConfigError(f"{cell_type} cell has {len(cell.nodes)} blocks; this space has {self.num_blocks}.")
            for (left, right), how in zip(cell.nodes, cell.combine):
                for op in (left.op, right.op):
                    if op not in self.ops:
                        raise ConfigError(f"{cell_type} cell uses op {op!r}, which is not in this search space "
                                          f"({', '.join(self.ops)}).")
                if how not in self.combines:
                    raise ConfigError(f"{cell_type} cell combines with {how!r}; this space allows {list(self.combines)}.")
                actions += [left.input, right.input, self.ops.index(left.op), self.ops.index(right.op),
                            self.combines.index(how)]
        return actions

    def sample(self, rng: random.Random, blocks: Optional[int] = None) -> tuple[int, ...]:
        """An architecture drawn uniformly: every decision independently, each choice equally likely."""
        return tuple(rng.randrange(d.num_choices) for d in self.decisions_for(blocks or self.num_blocks))

    def to_dict(self) -> dict:
        data = {"ops": list(self.ops), "num_blocks": self.num_blocks, "combines": list(self.combines)}
        if self.shared or self.min_blocks != self.num_blocks:   # NASNet's stays as it was written before
            data.update(shared=self.shared, min_blocks=self.min_blocks)
        if self.cell_output != "unused":
            data["cell_output"] = self.cell_output
        return data   # not the layout: a recipe's child keys may override it, and the recipe is saved


__all__ = ["AMOEBANET_OPS", "CELL_OUTPUTS", "PAPER_OPS", "PNASNET_LAYOUT", "PNAS_OPS", "SPACES", "Decision", "Preset",
           "SearchSpace", "check_ops"]
