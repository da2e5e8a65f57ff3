"""ENAS's micro-space child network with shared weights (melodyguan/enas ``micro_child.py``, search mode).

One set of weights serves every architecture: each node ``b`` of a cell has two slots (``x``, ``y``),
each slot picks an input ``j`` (one of the ``b + 2`` states) and an op, and the weights of the two
separable convolutions live per ``(b, slot, j, kernel)`` (``_enas_conv``: ``w_depth``, ``w_point`` and
the BN offset/scale indexed by ``prev_cell``).  The pools and the identity have no weights in search
(the cell's states all have ``out_filters`` channels).  The cell output concatenates the states no node
reads, then ReLU -> 1x1 conv whose weight rows are picked per used state (``final_conv``) -> BN.

The network (``_model``): stem 3x3 conv to ``3 * out_filters`` + BN, used as both inputs of layer 0;
``num_layers + 2`` layers, the reduction layers at ``[L // 3, 2 (L // 3) + 1]`` double the filters:
there the last output is factorized-reduced first and the cell runs at stride 1 on
``[h_i, FR(h_i)]`` (search mode has no strided cell ops).  Each layer calibrates its inputs
(``_maybe_calibrate_size``).  Head: ReLU -> global average pool -> dropout (``1 - keep_prob``) ->
FC without bias; the auxiliary head after layer ``pool_layers[-1] + 1`` is the zoo's
:class:`~nasnetzoo.models.enas.ENASAuxHead`.

The official search builds every graph with ``is_training=True`` (BN on batch statistics, dropout on),
the reward and the evaluation too; so does this network: it has no eval mode of its own.
No drop path in search (``_enas_layer`` applies none).  BN epsilon 1e-5.

An architecture is ENAS's arc: per cell ``4 B`` ints, per node ``[x_id, x_op, y_id, y_op]``, state
ids ``0 = h_{i-1}``, ``1 = h_i`` (ENAS order), ops :data:`ENAS_OPS`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...genotype import Cell, Edge, Genotype
from ...models.enas import ENASAuxHead
from ...models.nasnet import ConvBn
from ...ops.tf import ActConvBn, FactorizedReduction, StackedSeparable

# ENAS's op ids (micro_child._enas_cell's ``out`` list) as zoo nasnet-family op names.
ENAS_OPS = ("separable_3x3_2", "separable_5x5_2", "avg_pool_3x3", "max_pool_3x3", "none")
CONV_KERNELS = {0: 3, 1: 5}
BN_EPS = 1e-5


def check_arc(arc: Sequence[int], num_nodes: int) -> list[int]:
    arc = [int(a) for a in arc]
    if len(arc) != 4 * num_nodes:
        raise ConfigError(f"an ENAS cell arc has 4 x {num_nodes} ints (x_id x_op y_id y_op per node); got {len(arc)}.")
    for b in range(num_nodes):
        for k in (0, 2):
            if not 0 <= arc[4 * b + k] < b + 2:
                raise ConfigError(f"node {b} reads state {arc[4 * b + k]}; it has states 0..{b + 1}.")
            if not 0 <= arc[4 * b + k + 1] < len(ENAS_OPS):
                raise ConfigError(f"node {b} op {arc[4 * b + k + 1]} is not one of 0..{len(ENAS_OPS) - 1}.")
    return arc


def unused_states(arc: Sequence[int], num_nodes: int) -> list[int]:
    used = {arc[4 * b + k] for b in range(num_nodes) for k in (0, 2)}
    return [i for i in range(num_nodes + 2) if i not in used]


class SharedCell(nn.Module):
    """``_enas_layer``: one layer of the shared network; ``forward(h_prev, h_cur, arc)``."""

    def __init__(self, prev: tuple[int, int], cur: tuple[int, int], C: int, num_nodes: int) -> None:
        super().__init__()
        (c0, level0), (c1, level1) = prev, cur
        if level0 not in (level1, level1 - 1):
            raise ConfigError(f"cell inputs at levels {level0} and {level1}: at most one halving apart.")
        self.num_nodes, self.C = num_nodes, C
        if level0 != level1:
            self.calibrate_prev: nn.Module = FactorizedReduction(c0, C, 2, act=True, bn_eps=BN_EPS)
        elif c0 != C:
            self.calibrate_prev = ActConvBn(c0, C, 1, bn_eps=BN_EPS)
        else:
            self.calibrate_prev = nn.Identity()
        self.calibrate_cur = ActConvBn(c1, C, 1, bn_eps=BN_EPS) if c1 != C else nn.Identity()
        self.convs = nn.ModuleDict({
            self.conv_key(b, slot, j, op): StackedSeparable(C, C, k, 1, 2, bn_eps=BN_EPS)
            for b in range(num_nodes) for slot in "xy" for j in range(b + 2) for op, k in CONV_KERNELS.items()})
        # final_conv: one (C_out, C_in) block per state; the unused states' blocks are concatenated.
        self.final_weight = nn.Parameter(torch.empty(num_nodes + 2, C, C))
        nn.init.kaiming_uniform_(self.final_weight, a=5 ** 0.5)
        self.final_bn = nn.BatchNorm2d(C, eps=BN_EPS)

    @staticmethod
    def conv_key(node: int, slot: str, state: int, op: int) -> str:
        return f"n{node}_{slot}_s{state}_op{op}"

    def apply_op(self, x: torch.Tensor, node: int, slot: str, state: int, op: int) -> torch.Tensor:
        if op in CONV_KERNELS:
            return self.convs[self.conv_key(node, slot, state, op)](x)
        if op == 2:    # TF "SAME" average pooling counts only the real pixels
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        if op == 3:
            return F.max_pool2d(x, 3, 1, 1)
        return x

    def forward(self, h_prev: torch.Tensor, h_cur: torch.Tensor, arc: Sequence[int]) -> torch.Tensor:
        states = [self.calibrate_prev(h_prev), self.calibrate_cur(h_cur)]
        for b in range(self.num_nodes):
            x_id, x_op, y_id, y_op = arc[4 * b:4 * b + 4]
            states.append(self.apply_op(states[x_id], b, "x", x_id, x_op)
                          + self.apply_op(states[y_id], b, "y", y_id, y_op))
        keep = unused_states(arc, self.num_nodes)
        out = F.relu(torch.cat([states[i] for i in keep], 1))
        weight = torch.cat([self.final_weight[i] for i in keep], 1)[:, :, None, None]
        return self.final_bn(F.conv2d(out, weight))


class SharedNetwork(nn.Module):
    """The shared child network; ``forward(x, normal_arc, reduce_arc) -> (logits, aux_logits or None)``.
    The official search: ``num_layers=6, out_filters=20, num_nodes=5``."""

    def __init__(self, *, num_layers: int = 6, out_filters: int = 20, num_nodes: int = 5, num_classes: int = 10,
                 in_chans: int = 3, keep_prob: float = 0.9, auxiliary: bool = True, img_size: int = 32) -> None:
        super().__init__()
        if num_layers < 0 or out_filters < 2 or out_filters % 2 or num_nodes < 1:
            raise ConfigError(f"num_layers={num_layers} must be >= 0, out_filters={out_filters} even and >= 2 "
                              f"(factorized reductions halve it), num_nodes={num_nodes} >= 1.")
        if not 0.0 < keep_prob <= 1.0:
            raise ConfigError(f"keep_prob={keep_prob} must be in (0, 1].")
        self.num_nodes, self.keep_prob = num_nodes, keep_prob
        pool_distance = num_layers // 3
        self.pool_layers = [pool_distance, 2 * pool_distance + 1]
        aux_layer = self.pool_layers[-1] + 1
        C = out_filters
        self.stem = ConvBn(in_chans, 3 * C, 3, 1, "same", BN_EPS)
        metas = [(3 * C, 0), (3 * C, 0)]   # [h_{i-1}, h_i]: channels, halvings
        self.cells = nn.ModuleList()
        self.reductions = nn.ModuleDict()
        self.aux_after: Optional[int] = None
        self.auxiliary_head: Optional[nn.Module] = None
        for layer_id in range(num_layers + 2):
            if layer_id in self.pool_layers:
                C *= 2
                c, level = metas[-1]
                self.reductions[str(layer_id)] = FactorizedReduction(c, C, 2, act=False, bn_eps=BN_EPS)
                metas = [metas[-1], (C, level + 1)]
            self.cells.append(SharedCell(metas[0], metas[1], C, num_nodes))
            metas = [metas[-1], (C, metas[-1][1])]
            if auxiliary and layer_id == aux_layer:
                h = int(img_size)
                for _ in range(metas[-1][1]):
                    h = -(-h // 2)
                self.aux_after = layer_id
                self.auxiliary_head = ENASAuxHead(C, num_classes, (h - 5) // 3 + 1 if h >= 5 else h, BN_EPS)
        self.classifier = nn.Linear(C, num_classes, bias=False)

    def weight_parameters(self) -> list[nn.Parameter]:
        """What the official search trains: every child variable but the auxiliary head's
        (``_build_train`` drops ``aux_head`` variables from ``tf_variables``)."""
        aux = {id(p) for p in self.auxiliary_head.parameters()} if self.auxiliary_head is not None else set()
        return [p for p in self.parameters() if id(p) not in aux]

    def forward(self, x: torch.Tensor, normal_arc: Sequence[int], reduce_arc: Sequence[int], *,
                aux: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits, and the auxiliary head's while training (``aux=False``: skip it, as rewards do)."""
        x = self.stem(x)
        prev, cur = x, x
        aux_logits = None
        for layer_id, cell in enumerate(self.cells):
            if str(layer_id) in self.reductions:
                prev, cur = cur, self.reductions[str(layer_id)](cur)
                arc = reduce_arc
            else:
                arc = normal_arc
            prev, cur = cur, cell(prev, cur, arc)
            if aux and layer_id == self.aux_after and self.training:
                aux_logits = self.auxiliary_head(cur)
        out = F.relu(cur).mean((2, 3))
        if self.training and self.keep_prob < 1.0:
            out = F.dropout(out, 1.0 - self.keep_prob)
        return self.classifier(out), aux_logits


def arc_to_genotype(normal_arc: Sequence[int], reduce_arc: Sequence[int], num_nodes: int, *, name: str = "",
                    provenance: Optional[dict] = None) -> Genotype:
    """The ``family="nasnet"`` genotype of an arc: TF order (state 0 = h_i), so ENAS's ids 0 and 1
    swap, as in the zoo's ``genotypes/enas.yaml``; the output concatenates the unused states."""
    swap = {0: 1, 1: 0}
    cells = []
    for arc in (check_arc(normal_arc, num_nodes), check_arc(reduce_arc, num_nodes)):
        nodes = tuple((Edge(ENAS_OPS[arc[4 * b + 1]], swap.get(arc[4 * b], arc[4 * b])),
                       Edge(ENAS_OPS[arc[4 * b + 3]], swap.get(arc[4 * b + 2], arc[4 * b + 2])))
                      for b in range(num_nodes))
        concat = Cell(nodes, (0,)).unused_states()
        cells.append(Cell(nodes, concat, ("add",) * num_nodes))
    return Genotype(cells[0], cells[1], "nasnet", name, dict(provenance or {}))


__all__ = ["ENAS_OPS", "SharedCell", "SharedNetwork", "arc_to_genotype", "check_arc", "unused_states"]
