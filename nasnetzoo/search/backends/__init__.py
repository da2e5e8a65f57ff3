"""The supernet's fast path: the same function as the reference computation (search/supernet.py),
with less work and less memory kept for backward, on the CPU's small kernels.

* :mod:`.fused`: one edge's mixed op computed once (shared ReLU, zero ops skipped, op weights
  folded into BatchNorm scales, max pools without indices);
* :mod:`.node_mix`: a node's edges side by side, as one wider edge;
* :mod:`.cpu_kernels`: faster CPU kernels for the layers PyTorch's NCHW CPU kernels run slowly;
* :mod:`.policy`: when each of them runs (every size threshold, in one object).

:class:`FusedBackend` is what ``SearchNetwork(backend="fused" | "auto")`` calls (the table in
search/backend.py); nothing else imports this package.  Deleting the folder and its table line
leaves the reference computation.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch
from torch import nn

from ..memory_ops import is_channels_last
from .fused import edge_forward, edge_run, single
from .node_mix import node_sum
from .policy import DEFAULT_POLICY, FastPathPolicy


def edge_offset(node: int) -> int:
    """Index of the first edge into intermediate node ``node`` (supernet.edge_offset; not imported:
    the supernet reaches this package through the backend table)."""
    return sum(2 + i for i in range(node))


class FusedBackend:
    """The fast forward of a search cell and of an edge.  ``auto``: only where it was measured
    faster (CPU, fp32, NCHW, no autocast); elsewhere the reference computation runs."""

    def __init__(self, auto: bool = False, policy: FastPathPolicy = DEFAULT_POLICY, **options) -> None:
        self.auto = auto
        self.policy = replace(policy, **options) if options else policy

    def applies(self, x: torch.Tensor) -> bool:
        """Whether this forward runs for input ``x`` (False: the caller runs the reference)."""
        if not self.auto:
            return True
        return (x.device.type == "cpu" and x.dtype == torch.float32 and not is_channels_last(x)
                and not torch.is_autocast_enabled("cpu"))

    def _preprocess(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> list:
        return [single(cell.preprocess0, s0, self.policy), single(cell.preprocess1, s1, self.policy)]

    def cell(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
             edge_weights: Optional[torch.Tensor]) -> torch.Tensor:
        """``SearchCell.forward``: each node's edges side by side (or one by one, fused)."""
        states = self._preprocess(cell, s0, s1)
        for i in range(cell.steps):
            edges = slice(edge_offset(i), edge_offset(i) + len(states))
            beta = None if edge_weights is None else edge_weights[edges]
            if self.policy.side_by_side:
                states.append(node_sum(cell.edges[edges], states, weights[edges], beta, self.policy))
            else:
                states.append(sum(edge_forward(edge, h, w, None if beta is None else beta[j], self.policy)
                                  for j, (edge, h, w) in enumerate(zip(cell.edges[edges], states, weights[edges]))))
        return torch.cat(states[-cell.multiplier:], dim=1)

    def cell_discrete(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor,
                      choice: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
        """``SearchCell.forward_discrete``: only the chosen ops."""
        states = self._preprocess(cell, s0, s1)
        for i, pairs in enumerate(choice):
            start = edge_offset(i)
            states.append(sum(edge_run(cell.edges[start + j], states[j], o, self.policy) for j, o in pairs))
        return torch.cat(states[-cell.multiplier:], dim=1)

    def edge(self, edge: nn.Module, x: torch.Tensor, weights: torch.Tensor,
             edge_weight: Optional[torch.Tensor]) -> torch.Tensor:
        return edge_forward(edge, x, weights, edge_weight, self.policy)

    def edge_run(self, edge: nn.Module, x: torch.Tensor, op_index: int) -> torch.Tensor:
        return edge_run(edge, x, op_index, self.policy)


__all__ = ["FusedBackend", "FastPathPolicy", "DEFAULT_POLICY"]
