"""SNAS's resource constraint: the official per-op cost table and the penalty built from it.

The table is the official code's (SNAS-Series/SNAS-Series ``SNAS/operations.py``): each op of an edge
has a parameter count ``size``, a ``flops`` and a memory-access count ``mac``, worked out from the
cell's channels ``C``, the edge's input height ``h`` and stride (``y = h`` at stride 1, ``h // 2`` at
stride 2), with the official formulas as they are (e.g. a separable conv's ``size`` counts both of
its depthwise convs but only ``C x C`` per pointwise conv):

=============== ============================ ================ =====================================
op              size                         flops            mac (stride 1 / stride 2)
=============== ============================ ================ =====================================
none            0                            0                0
max/avg pool    0                            9 y^2 C          2 y^2 C / 5 y^2 C
skip_connect    0 / 2 C (C // 2)             0 / size y^2     2 C h^2 / 2 y^2 (4 C + C // 2) + size
sep_conv_KxK    2 C K^2 + 2 C^2              size y^2         y^2 8 C + size / y^2 11 C + size
dil_conv_KxK    C K^2 + C^2                  size y^2         y^2 4 C + size / y^2 7 C + size
=============== ============================ ================ =====================================

(a stride-2 skip_connect is a FactorizedReduce).  Every cell has its own table, for its channels
and resolution.  The penalty of a cell (``SNAS/model_search.py``, ``--method reparametrization``)
is, per edge, each resource's expectation under the relaxed sample ``Z`` (``sum_k cost_k Z_k``),
then with ``--log_penalty`` the mean of their logs (an expectation under 1 in magnitude counts as
1: log 0), else ``0.43 (2 size + flops / 4000 + mac / 100)``; summed over the edges.  The search's
penalty (``SNAS/train_search.py``) is the normal cells' sum / 6 plus the reduction cells' sum / 2:
the official divides by 6 and 2 whatever the depth (its 8-cell network's counts).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...errors import ConfigError
from ..supernet import SearchNetwork

RESOURCES = ("size", "flops", "mac")
SEPARATIONS = ("all", "size", "flops", "mac")   # --separation: which resources the penalty counts
NORMAL_DIVISOR, REDUCE_DIVISOR = 6, 2           # the official's constants (train_search.py)


def op_cost(op: str, C: int, h: int, stride: int) -> tuple[float, float, float]:
    """(size, flops, mac) of op ``op`` on ``C`` channels, input height ``h``, as the official code counts."""
    y = h if stride == 1 else h // 2
    if op == "none":
        return 0.0, 0.0, 0.0
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return 0.0, 9.0 * y * y * C, (2.0 if stride == 1 else 5.0) * y * y * C
    if op == "skip_connect":
        if stride == 1:
            return 0.0, 0.0, 2.0 * C * h * h
        size = 2.0 * C * (C // 2)
        return size, size * y * y, 2.0 * y * y * (4 * C + C // 2) + size
    kind, _, kernel = op.rpartition("_")
    if kind in ("sep_conv", "dil_conv") and kernel[:1].isdigit():
        k = int(kernel.split("x")[0])
        if kind == "sep_conv":
            size = 2.0 * C * k * k + 2.0 * C * C
            mac = y * y * ((7 if stride == 1 else 10) * C + C) + size
        else:
            size = 1.0 * C * k * k + C * C
            mac = y * y * ((3 if stride == 1 else 6) * C + C) + size
        return size, size * y * y, mac
    raise ConfigError(f"SNAS's resource table has no cost for op {op!r}; its ops are none, max_pool_3x3, "
                      "avg_pool_3x3, skip_connect, sep_conv_KxK, dil_conv_KxK.")


def stem_height(network: SearchNetwork, height: int) -> int:
    """The height of the first cell's inputs for an input image of ``height``."""
    if network.stem_type == "cifar":
        return height
    for _ in range(3):   # three stride-2 3x3 convs with padding 1
        height = -(-height // 2)
    return height


def cost_tables(network: SearchNetwork, height: int, *, dtype=torch.float32,
                device=None) -> list[tuple[str, torch.Tensor]]:
    """Per cell, ``(cell_type, table)`` with ``table[r, e, k]`` resource ``r`` (size, flops, mac) of
    op ``k`` on edge ``e``, for input images of ``height``."""
    tables = []
    h = stem_height(network, height)
    for cell in network.cells:
        rows = []
        C = cell.C
        for i in range(cell.steps):
            for j in range(2 + i):
                stride = 2 if cell.reduction and j < 2 else 1
                h_in = h if j < 2 or not cell.reduction else -(-h // 2)   # a node of a reduction cell is at h / 2
                rows.append([op_cost(p, C, h_in, stride) for p in network.primitives])
        table = torch.tensor(rows, dtype=torch.float64).permute(2, 0, 1).to(dtype=dtype, device=device)
        tables.append(("reduce" if cell.reduction else "normal", table))
        if cell.reduction:
            h = -(-h // 2)
    return tables


def cell_penalty(table: torch.Tensor, weights: torch.Tensor, *, log: bool, separation: str) -> torch.Tensor:
    """One cell's penalty: summed over its edges (``weights``: the relaxed sample, edges x ops)."""
    size, flops, mac = table[0] * weights, table[1] * weights, table[2] * weights
    if log:
        logs = []
        for resource in (size, flops, mac):
            total = resource.sum(-1)
            clean = torch.where(total.abs() < 1, torch.ones_like(total), total)
            logs.append(torch.log(torch.abs(clean)))
        per_edge = {"all": (logs[0] + logs[1] + logs[2]) / 3, "size": logs[0], "flops": logs[1], "mac": logs[2]}
    else:
        per_edge = {"all": ((size * 2 + flops / 4000 + mac / 100) * 0.43).sum(-1), "size": size.sum(-1),
                    "flops": flops.sum(-1), "mac": mac.sum(-1)}
    return per_edge[separation].sum()


def resource_penalty(tables: Sequence[tuple[str, torch.Tensor]], weights: dict, *, log: bool = True,
                     separation: str = "all") -> torch.Tensor:
    """The search's penalty: normal cells' sum / 6 + reduction cells' sum / 2 (the official's)."""
    sums = {"normal": 0.0, "reduce": 0.0}
    for cell_type, table in tables:
        sums[cell_type] = sums[cell_type] + cell_penalty(table, weights[cell_type], log=log, separation=separation)
    return sums["normal"] / NORMAL_DIVISOR + sums["reduce"] / REDUCE_DIVISOR


__all__ = ["RESOURCES", "SEPARATIONS", "cell_penalty", "cost_tables", "op_cost", "resource_penalty"]
