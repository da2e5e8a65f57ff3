"""PNAS's progressive cell space: cells of b blocks, grown one block at a time.

Liu et al., "Progressive Neural Architecture Search" (ECCV 2018), Sec. 3.1: a cell is B blocks;
block b picks two inputs from the cell's two inputs and the blocks before it, an op for each, and
adds the two results (PNAS's only combiner).  One cell type serves as the normal cell and, run at
stride 2, as the reduction cell.  The 8 ops are 3x3/5x5/7x7 depthwise-separable convolutions,
1x7 then 7x1 convolution, identity, 3x3 average pooling, 3x3 max pooling and 3x3 dilated
convolution (the paper's list, as two independent write-ups of the paper quote it); here they are
the zoo's TF-slim op names, the ones the published ``pnasnet5`` genotype uses (``separable_*_2`` is
TF-slim's separable conv applied twice, as in NASNet and PNASNet-5).  So there are
``|B_1| = 2^2 x 8^2 = 256`` one-block cells counted as ordered choices.

A block is ``(input_a, op_a, input_b, op_b)``.  Adding is commutative, so ``(a, b)`` and
``(b, a)`` are the same block: every block here is kept in one canonical order
(``(input_a, op_a) <= (input_b, op_b)``), which leaves ``16 * 17 / 2 = 136`` distinct one-block cells
of the 256 (the paper removes symmetric cells; that its count is 136 we could not check against
the paper's text).  Cells that differ only by the order of two blocks that do not read each
other are not merged: the expansion appends a block to a fixed prefix, as the paper's does.

State numbers are the zoo's ``family="nasnet"`` ones: 0 is the cell's current input ``H_{c-1}``,
1 the previous ``H_{c-2}``, block ``k`` (0-based) is state ``k + 2``.  A cell becomes a genotype
through the sampled searches' ``pnas`` preset (:attr:`ProgressiveSpace.pipeline_space`), the one
place that says how a PNAS cell's output is formed (every block's output concatenated, as TF-slim's
``PNasNetNormalCell`` does; the published ``pnasnet5`` genotype: ``concat [2, 3, 4, 5, 6]``), so a
random search or evolution over ``space: pnas`` builds the same cells.  The 8 ops are
:data:`~.space.PNAS_OPS`.
"""
from __future__ import annotations

from itertools import combinations_with_replacement
from math import comb
from typing import Any, Iterable, Mapping, Optional, Sequence

from ...errors import ConfigError
from ...genotype import Genotype
from .space import PNAS_OPS, SearchSpace, check_ops

Block = tuple[int, int, int, int]        # (input_a, op_a, input_b, op_b), op indices into the space's ops
PNASCell = tuple[Block, ...]


def canonical_block(block: Sequence[int]) -> Block:
    """The block with its two (input, op) branches in canonical order (adding is commutative)."""
    in_a, op_a, in_b, op_b = (int(v) for v in block)
    if (in_a, op_a) > (in_b, op_b):
        in_a, op_a, in_b, op_b = in_b, op_b, in_a, op_a
    return (in_a, op_a, in_b, op_b)


class ProgressiveSpace:
    """PNAS cells over ``ops`` with up to ``num_blocks`` blocks (B)."""

    def __init__(self, ops: Sequence[str] = PNAS_OPS, num_blocks: int = 5) -> None:
        ops = check_ops(ops, "PNAS space")
        if int(num_blocks) < 1:
            raise ConfigError(f"PNAS num_blocks={num_blocks} must be at least 1 (the paper's B is 5).")
        self.ops, self.num_blocks = ops, int(num_blocks)
        # The pipeline's actions over the same cells (one cell type, add only, 1..B blocks).
        self.pipeline_space = SearchSpace.preset("pnas", ops=ops, num_blocks=self.num_blocks)

    # ------------------------------------------------------------------ counting and enumeration
    def num_inputs(self, block: int) -> int:
        """Input choices of block ``block`` (0-based): the two cell inputs and the blocks before it."""
        return 2 + block

    def blocks_at(self, block: int) -> list[Block]:
        """Every canonical block that can sit at position ``block``, in a fixed order."""
        branches = [(i, o) for i in range(self.num_inputs(block)) for o in range(len(self.ops))]
        return [(a[0], a[1], b[0], b[1]) for a, b in combinations_with_replacement(branches, 2)]

    def num_blocks_at(self, block: int) -> int:
        m = self.num_inputs(block) * len(self.ops)
        return comb(m + 1, 2)

    def num_cells(self, blocks: int) -> int:
        """How many distinct canonical cells of ``blocks`` blocks there are (closed form)."""
        n = 1
        for b in range(blocks):
            n *= self.num_blocks_at(b)
        return n

    def one_block_cells(self) -> list[PNASCell]:
        return [(block,) for block in self.blocks_at(0)]

    def expand(self, cell: Sequence[Block]) -> list[PNASCell]:
        """Every cell of ``len(cell) + 1`` blocks whose first blocks are ``cell``."""
        cell = self.check(cell)
        if len(cell) >= self.num_blocks:
            raise ConfigError(f"a {len(cell)}-block cell cannot grow: this space has B={self.num_blocks}.")
        return [cell + (block,) for block in self.blocks_at(len(cell))]

    def expand_all(self, cells: Iterable[Sequence[Block]]) -> list[PNASCell]:
        """The expansions of every cell, in order; distinct parents never share a child (the parent is
        the child's prefix), so this has no repeats when ``cells`` has none."""
        out: list[PNASCell] = []
        for cell in cells:
            out.extend(self.expand(cell))
        return out

    # ------------------------------------------------------------------ checks and conversions
    def check(self, cell: Sequence[Sequence[int]]) -> PNASCell:
        """The cell as a tuple of canonical blocks; one clear error for anything out of range."""
        blocks = tuple(canonical_block(b) if len(b) == 4 else _bad_block(b) for b in cell)
        if not 1 <= len(blocks) <= self.num_blocks:
            raise ConfigError(f"a PNAS cell has 1..{self.num_blocks} blocks; got {len(blocks)}.")
        for k, (in_a, op_a, in_b, op_b) in enumerate(blocks):
            for state in (in_a, in_b):
                if not 0 <= state < self.num_inputs(k):
                    raise ConfigError(f"block {k} reads state {state}; it may read states 0..{self.num_inputs(k) - 1} "
                                      "(the two cell inputs and the blocks before it).")
            for op in (op_a, op_b):
                if not 0 <= op < len(self.ops):
                    raise ConfigError(f"block {k} uses op index {op}; this space has {len(self.ops)} ops.")
        return blocks

    def tokens(self, cell: Sequence[Block]) -> list[int]:
        """The predictor's input sequence: ``input_a, input_b, op_a, op_b`` per block (4b tokens)."""
        out: list[int] = []
        for in_a, op_a, in_b, op_b in self.check(cell):
            out += [in_a, in_b, op_a, op_b]
        return out

    def to_actions(self, cell: Sequence[Block]) -> list[int]:
        """The pipeline's action sequence of a cell: ``input_a, input_b, op_a, op_b, combine`` per block
        (the sampled searches' shared-cell space; ``combine`` 0 is add, PNAS's only combiner)."""
        out: list[int] = []
        for in_a, op_a, in_b, op_b in self.check(cell):
            out += [in_a, in_b, op_a, op_b, 0]
        return out

    def from_actions(self, actions: Sequence[int]) -> PNASCell:
        """The canonical cell of an action sequence (the inverse of :meth:`to_actions`)."""
        actions = [int(a) for a in actions]
        if not actions or len(actions) % 5:
            raise ConfigError(f"a PNAS architecture has 5 actions per block; got {len(actions)}.")
        blocks = []
        for k in range(0, len(actions), 5):
            in_a, in_b, op_a, op_b, how = actions[k:k + 5]
            if how != 0:
                raise ConfigError(f"block {k // 5} combines with choice {how}; PNAS adds (choice 0) only.")
            blocks.append((in_a, op_a, in_b, op_b))
        return self.check(blocks)

    def to_genotype(self, cell: Sequence[Block], *, name: str = "",
                    provenance: Optional[Mapping[str, Any]] = None) -> Genotype:
        """A ``family="nasnet"`` genotype: the same cell as normal and reduction cell, adds only, its
        output as the ``pnas`` preset forms it (the builder's ``reduction="stride"`` runs it at stride 2)."""
        return self.pipeline_space.to_genotype(self.to_actions(cell), name=name, provenance=provenance)

    def encode(self, genotype: Genotype) -> PNASCell:
        """The canonical PNAS cell of a genotype of this space (the inverse of :meth:`to_genotype`)."""
        if genotype.family != "nasnet":
            raise ConfigError(f"the PNAS space holds 'nasnet'-family cells, not {genotype.family!r}.")
        if genotype.normal != genotype.reduce:
            raise ConfigError("a PNAS genotype has one cell type: its normal and reduce cells must be equal.")
        cell = genotype.normal
        if not cell.adds_only:
            raise ConfigError("a PNAS cell combines by add only; this one concatenates in a block.")
        expected = self.pipeline_space.output_states(cell.nodes)
        if tuple(cell.concat) != expected:
            raise ConfigError(f"a PNAS cell concatenates every block's output (states {list(expected)}); "
                              f"this one concatenates {list(cell.concat)}.")
        blocks = []
        for left, right in cell.nodes:
            for op in (left.op, right.op):
                if op not in self.ops:
                    raise ConfigError(f"the cell uses op {op!r}, which is not in this PNAS space ({', '.join(self.ops)}).")
            blocks.append((left.input, self.ops.index(left.op), right.input, self.ops.index(right.op)))
        return self.check(blocks)

    def describe(self, cell: Sequence[Block]) -> str:
        """One line: ``[(op_a, in_a) + (op_b, in_b)] ...``."""
        return " ".join(f"[{self.ops[op_a]}@{in_a} + {self.ops[op_b]}@{in_b}]"
                        for in_a, op_a, in_b, op_b in self.check(cell))

    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "num_blocks": self.num_blocks}


def _bad_block(block: Any) -> Block:
    raise ConfigError(f"a PNAS block is (input_a, op_a, input_b, op_b); got {list(block)!r}.")


def cell_from_json(value: Sequence[Sequence[int]]) -> PNASCell:
    """A cell read back from JSON (lists) as the tuples the space uses."""
    return tuple(tuple(int(v) for v in block) for block in value)   # type: ignore[return-value]


__all__ = ["Block", "PNASCell", "PNAS_OPS", "ProgressiveSpace", "canonical_block", "cell_from_json"]
