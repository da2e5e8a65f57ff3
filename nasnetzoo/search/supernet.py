"""The DARTS search space as one weight-sharing supernet.

Each edge of a search cell is a :class:`MixedOp` holding every candidate primitive (built from the
same op registry as the zoo's networks, with non-affine BatchNorm as in the official search code).
The supernet runs in two modes:

* **continuous** (DARTS, PC-DARTS): every edge outputs the softmax(alpha)-weighted sum of its ops;
  with ``edge_norm`` each node's incoming edges are further weighted by softmax(beta) over that node.
  With ``partial_k > 1`` (PC-DARTS) an edge's ops see only the first ``C / k`` channels; the rest
  bypass them (max-pooled on reduction edges), are concatenated back and the channels shuffled.
* **discrete** (PARSEC): a sampled architecture runs only its chosen ops, so a step costs the memory
  of one architecture, not of the supernet.
* **one path per edge** (GDAS, :meth:`SearchNetwork.forward_sampled`): each edge runs only its
  sampled op, scaled by that op's (straight-through) weight, so a step costs one path's memory.

``forward(x, op_weights)`` mixes with given op weights instead of softmax(alpha) (SNAS's relaxed
sample); ``drop_path_prob`` drops each edge's output per sample while training (SNAS's search).

``edge_ops`` gives each edge its own subset of the candidate ops (P-DARTS's search space
approximation: fewer ops per edge each stage); the alphas then have one column per op the edge
keeps, in the order of ``primitives`` (a strategy's genotype rule must read them through
``edge_ops``, as P-DARTS's does; ``derive_from_weights`` assumes every op on every edge).
``skip_dropout`` puts a dropout after every stride-1 ``skip_connect`` (P-DARTS's search
regularisation; its rate is ``skip_dropout_prob``).

Edges are numbered node by node: node ``i`` (state ``i + 2``) reads states ``0 .. i + 1`` through
edges ``offset(i) .. offset(i) + i + 1``, so a 4-node cell has 14 edges.

This module is the reference computation, as the papers and the official code write it (a mixed
op is ``sum_k w_k * op_k(x)``).  ``backend=`` picks who computes it (search/backend.py): the
``reference`` is this module's code; ``fused`` (search/backends/) the same function with less work
and memory on the CPU; ``auto`` (the default) the fused one only on the CPU in fp32 NCHW.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..models.layers import DropPath
from ..ops.darts import DARTS_PRIMITIVES, FactorizedReduce, Identity, ReLUConvBN
from ..ops.registry import build_op
from .backend import build_backend
from .memory_ops import channel_shuffle

CELL_TYPES = ("normal", "reduce")
# "checkpoint" keeps only each cell's inputs for the backward pass and recomputes the cell there.
MEMORY_MODES = ("default", "checkpoint")


@contextlib.contextmanager
def keep_batch_norm_stats(module: nn.Module):
    """Undo what a recomputed forward does to BatchNorm running statistics (already updated once)."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)


def num_edges(steps: int) -> int:
    return sum(2 + i for i in range(steps))


def edge_offset(node: int) -> int:
    """Index of the first edge into intermediate node ``node`` (0-based)."""
    return sum(2 + i for i in range(node))


class _Backend:
    """``backend``: who computes this module's forward (search/backend.py); ``fused``: the old
    spelling (True: ``backend="fused"``, False: ``"reference"``)."""

    def set_backend(self, name: str, **options):
        fast = build_backend(name, **options)
        for m in self.modules():
            if isinstance(m, _Backend):
                m.backend, m._fast = name, fast   # a plain attribute, not module state
        return self

    def _fast_for(self, x: torch.Tensor):
        """The fast backend where it runs for ``x``, else None (the reference computation)."""
        fast = self.__dict__.get("_fast")
        return fast if fast is not None and fast.applies(x) else None

    @property
    def fused(self) -> bool:
        return self.backend != "reference"

    @fused.setter
    def fused(self, value: bool) -> None:
        self.set_backend("fused" if value else "reference")


class MixedOp(_Backend, nn.Module):
    """All candidate ops of one edge; ``forward(x, weights)`` mixes them, ``run(x, op_index)`` picks one.

    ``backend`` (default ``auto``) picks who computes the mix; ``fused=True/False`` is the old
    spelling of ``backend="fused"/"reference"``.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], partial_k: int = 1,
                 fused: Optional[bool] = None, backend: str = "auto", pool_bn: Optional[str] = "buffers",
                 skip_dropout: bool = False) -> None:
        super().__init__()
        self.primitives = tuple(primitives)   # this edge's candidate ops, in the alphas' column order
        if C % partial_k:
            raise ConfigError(f"partial channels: C={C} is not divisible by K={partial_k}.")
        self.k = partial_k
        self.stride = stride
        C_op = C // partial_k
        # pool_bn="buffers": pools are followed by BatchNorm(affine=False) as in the official
        # search code, so their output scale is comparable with the convs'; None: bare pools (GDAS).
        ops = [build_op(p, C_op, C_op, stride, family="darts", affine=False, pool_bn=pool_bn) for p in primitives]
        if skip_dropout:   # P-DARTS: the identity followed by a dropout, as its MixedOp wraps it
            ops = [nn.Sequential(op, nn.Dropout(0.0)) if type(op) is Identity else op for op in ops]
        self.ops = nn.ModuleList(ops)
        # ceil_mode so the bypass matches the ops' ceil(H / 2) on odd maps.
        self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 and partial_k > 1 else None
        self.set_backend(_backend_name(backend, fused))

    def split_channels(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """PC-DARTS's partial channels: (the C / K channels the ops see, the rest, which bypasses
        them; None where K = 1)."""
        if self.k == 1:
            return x, None
        c = x.shape[1] // self.k
        part, bypass = x.split([c, x.shape[1] - c], dim=1)   # one backward node (a cat), not two slices
        return part, bypass

    def _merge(self, out: torch.Tensor, bypass: Optional[torch.Tensor]) -> torch.Tensor:
        if bypass is None:
            return out
        if self.bypass_pool is not None:
            bypass = self.bypass_pool(bypass)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.k)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                edge_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``edge_weight * sum_k weights[k] * op_k(x)`` (``edge_weight``: PC-DARTS's beta, or None)."""
        fast = self._fast_for(x)
        if fast is not None:
            return fast.edge(self, x, weights, edge_weight)
        out = self.forward_reference(x, weights)
        return out if edge_weight is None else edge_weight * out

    def forward_reference(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The mixed op as the official code computes it: every op run, scaled and summed."""
        part, bypass = self.split_channels(x)
        out = sum(w * op(part) for w, op in zip(weights, self.ops))
        return self._merge(out, bypass)

    def run(self, x: torch.Tensor, op_index: int) -> torch.Tensor:
        fast = self._fast_for(x)
        if fast is not None:
            return fast.edge_run(self, x, op_index)
        part, bypass = self.split_channels(x)
        return self._merge(self.ops[op_index](part), bypass)


def _backend_name(backend: str, fused: Optional[bool]) -> str:
    """``backend``, or the old ``fused=`` spelling mapped to it."""
    if fused is None:
        return backend
    old = "fused" if fused else "reference"
    if backend not in ("auto", old):
        raise ConfigError(f"fused={fused} contradicts backend={backend!r}: give backend= only "
                          f"(fused=True is backend='fused', fused=False is backend='reference').")
    return old


class SearchCell(_Backend, nn.Module):
    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, primitives: Sequence[str], partial_k: int,
                 pool_bn: Optional[str] = "buffers", edge_primitives: Optional[Sequence[Sequence[str]]] = None,
                 skip_dropout: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.C = C   # the channels of its nodes (and of every edge's ops)
        self.steps = steps
        self.multiplier = multiplier
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        strides = [2 if reduction and j < 2 else 1 for i in range(steps) for j in range(2 + i)]
        per_edge = [primitives] * len(strides) if edge_primitives is None else edge_primitives
        self.edges = nn.ModuleList(MixedOp(C, stride, ops, partial_k, pool_bn=pool_bn, skip_dropout=skip_dropout)
                                   for stride, ops in zip(strides, per_edge, strict=True))
        # Each edge's output dropped per sample while training (SNAS's search); p = 0: the identity.
        self.drop_path = DropPath()
        self.set_backend("auto")

    def _dropping(self) -> bool:
        return self.training and self.drop_path.active

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        fast = self._fast_for(s1)
        if fast is not None and not self._dropping():   # the fast cell has no per-edge drop path
            return fast.cell(self, s0, s1, weights, edge_weights)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            start = edge_offset(i)
            terms = []
            for j, h in enumerate(states):
                e = start + j
                term = self.edges[e](h, weights[e], None if edge_weights is None else edge_weights[e])
                terms.append(self.drop_path(term))
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward_sampled(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                        index: Sequence[int]) -> torch.Tensor:
        """GDAS: edge ``e`` runs only op ``index[e]``, times its weight ``weights[e, index[e]]`` (the
        straight-through hard sample: 1 in the forward, the soft probability's gradient).  Only that
        op is computed, by either backend (``MixedOp.run``)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            start = edge_offset(i)
            terms = []
            for j, h in enumerate(states):
                e = start + j
                k = index[e]
                terms.append(self.drop_path(self.edges[e].run(h, k) * weights[e, k]))
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward_discrete(self, s0: torch.Tensor, s1: torch.Tensor,
                         choice: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
        """``choice[i]`` lists node i's (input state, op index) pairs."""
        fast = self._fast_for(s1)
        if fast is not None:
            return fast.cell_discrete(self, s0, s1, choice)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i, pairs in enumerate(choice):
            start = edge_offset(i)
            states.append(sum(self.edges[start + j].run(states[j], o) for j, o in pairs))
        return torch.cat(states[-self.multiplier:], dim=1)


def _check_edge_ops(edge_ops: Optional[dict], edges: int, num_ops: int) -> dict:
    """``{cell_type: per edge, the indices (into primitives) of its ops}``, every op where not given.
    Within a cell type every edge keeps as many ops (the alphas are one matrix)."""
    every = tuple(range(num_ops))
    out = {}
    for t in CELL_TYPES:
        subsets = (edge_ops or {}).get(t)
        subsets = [every] * edges if subsets is None else [tuple(int(k) for k in ops) for ops in subsets]
        if len(subsets) != edges or any(not ops or sorted(set(ops)) != list(ops) or not 0 <= ops[0] <= ops[-1] < num_ops
                                        for ops in subsets):
            raise ConfigError(f"edge_ops[{t!r}] must list, for each of the {edges} edges, increasing op indices "
                              f"in 0..{num_ops - 1}; got {subsets}.")
        if len({len(ops) for ops in subsets}) != 1:
            raise ConfigError(f"edge_ops[{t!r}]: every edge of a cell type keeps as many ops (one alphas matrix); "
                              f"got {sorted({len(ops) for ops in subsets})} ops per edge.")
        out[t] = tuple(subsets)
    return out


class SearchNetwork(_Backend, nn.Module):
    """The DARTS search supernet: 8 cells with C=16 on CIFAR (reductions at 1/3 and 2/3).

    ``backend``: ``auto`` (default), ``reference`` or ``fused`` (search/backend.py); ``fused=`` is
    its old spelling (True: ``"fused"``, False: ``"reference"``).

    ``stem="imagenet"`` gives the PC-DARTS ImageNet search network (three stride-2 3x3 convs).
    Architecture parameters (``alphas_*``, and ``betas_*`` with ``edge_norm``) are registered
    parameters, so they are saved with the state dict; :meth:`weight_parameters` and
    :meth:`arch_parameters` separate them for their two optimizers.
    """

    def __init__(self, C: int = 16, layers: int = 8, num_classes: int = 10, *, steps: int = 4,
                 multiplier: Optional[int] = None, stem_multiplier: int = 3, stem: str = "cifar", in_chans: int = 3,
                 primitives: Sequence[str] = DARTS_PRIMITIVES, partial_k: int = 1,
                 edge_norm: bool = False, fused: Optional[bool] = None, memory: str = "default",
                 channels_last: bool = False, backend: str = "auto", pool_bn: Optional[str] = "buffers",
                 last_act: bool = False, edge_ops: Optional[dict] = None, skip_dropout: bool = False) -> None:
        super().__init__()
        if memory not in MEMORY_MODES:
            raise ConfigError(f"unknown search memory mode {memory!r}; use one of {', '.join(MEMORY_MODES)}.")
        self.memory = memory
        # NHWC (opt-in): 0.58x the time of NCHW for the four conv ops, forward + backward, on a
        # 2-core EPYC, but PyTorch 2.14.1's CPU backward corrupts the heap on some small
        # supernets in that layout, with the reference mixed op too (docs/search_speed.md), so
        # it stays off unless asked for (on a GPU it is cuDNN's fast layout).
        self.channels_last = bool(channels_last)
        if stem not in ("cifar", "imagenet"):
            raise ConfigError(f"unknown search stem {stem!r}; use 'cifar' or 'imagenet'.")
        if layers < 3:
            raise ConfigError(f"a search network needs at least 3 cells (two reductions), got layers={layers}.")
        multiplier = steps if multiplier is None else multiplier   # the cell output: all its nodes
        if not 1 <= multiplier <= steps:
            raise ConfigError(f"a cell concatenates its last multiplier={multiplier} nodes but has steps={steps}; "
                              f"use 1 <= multiplier <= steps.")
        self.C, self.layers, self.num_classes, self.steps = C, layers, num_classes, steps
        self.primitives = tuple(primitives)
        self.partial_k, self.edge_norm, self.stem_type = partial_k, edge_norm, stem
        if stem == "cifar":
            C_curr = stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(in_chans, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
            C_pp, C_p, reduction_prev = C_curr, C_curr, False
        else:
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_chans, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=True), nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C))
            C_pp, C_p, reduction_prev = C, C, True
        self.reduction_indices = (layers // 3, 2 * layers // 3)
        self.edge_ops = _check_edge_ops(edge_ops, num_edges(steps), len(self.primitives))
        cells, C_curr = [], C
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                C_curr *= 2
            subsets = self.edge_ops["reduce" if reduction else "normal"]
            cells.append(SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev,
                                    self.primitives, partial_k, pool_bn=pool_bn, skip_dropout=skip_dropout,
                                    edge_primitives=[[self.primitives[k] for k in ops] for ops in subsets]))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.cells = nn.ModuleList(cells)
        self.set_backend(_backend_name(backend, fused))
        # last_act: BatchNorm + ReLU before the pooling, as GDAS's search network (``lastact``).
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_p), nn.ReLU()) if last_act else None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        E = num_edges(steps)
        # 1e-3 * randn as in the official code: near-uniform mixing at the start.
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(E, len(self.edge_ops["normal"][0])))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(E, len(self.edge_ops["reduce"][0])))
        if edge_norm:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(E))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(E))

    def set_fused(self, fused: bool, side_by_side: bool = True) -> "SearchNetwork":
        """The old spelling of :meth:`set_backend`: ``set_backend("fused", side_by_side=...)`` for
        True, ``set_backend("reference")`` for False."""
        return self.set_backend("fused", side_by_side=side_by_side) if fused else self.set_backend("reference")

    @property
    def skip_dropout_prob(self) -> float:
        """The rate of the dropout after each stride-1 skip_connect (``skip_dropout=True``; 0: none)."""
        return next((m.p for m in self._skip_dropouts()), 0.0)

    @skip_dropout_prob.setter
    def skip_dropout_prob(self, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"skip_dropout_prob={p} is not in [0, 1].")
        for m in self._skip_dropouts():
            m.p = float(p)

    def _skip_dropouts(self) -> list:
        return [m for m in self.modules() if isinstance(m, nn.Dropout)]

    # ---------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        names = ["alphas_normal", "alphas_reduce"] + (["betas_normal", "betas_reduce"] if self.edge_norm else [])
        return [getattr(self, n) for n in names]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self, cell_type: str) -> torch.Tensor:
        """softmax(alpha) per edge, shape (edges, ops)."""
        return F.softmax(getattr(self, f"alphas_{cell_type}"), dim=-1)

    def edge_weights(self, cell_type: str) -> Optional[torch.Tensor]:
        """PC-DARTS edge normalisation: softmax(beta) over each node's incoming edges."""
        if not self.edge_norm:
            return None
        beta = getattr(self, f"betas_{cell_type}")
        return torch.cat([F.softmax(beta[edge_offset(i):edge_offset(i) + 2 + i], dim=-1)
                          for i in range(self.steps)])

    # ---------------------------------------------------------------- forward
    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.stem_type == "cifar":
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def _head(self, s1: torch.Tensor) -> torch.Tensor:
        if self.lastact is not None:
            s1 = self.lastact(s1)
        return self.classifier(self.global_pool(s1).flatten(1))

    @property
    def drop_path_prob(self) -> float:
        """The probability of dropping an edge's output per sample while training (0: never)."""
        return self.cells[0].drop_path.p

    @drop_path_prob.setter
    def drop_path_prob(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"drop_path_prob={p} is not in [0, 1).")
        for cell in self.cells:
            cell.drop_path.p = float(p)

    def forward(self, x: torch.Tensor, op_weights: Optional[dict] = None) -> torch.Tensor:
        """The continuous supernet; ``op_weights[cell_type]`` (edges x ops) replaces softmax(alpha)
        where given (SNAS's relaxed sample)."""
        weights = {t: self.op_weights(t) for t in CELL_TYPES} if op_weights is None else op_weights
        edge_w = {t: self.edge_weights(t) for t in CELL_TYPES}
        s0, s1 = self._stem(x)
        for cell in self.cells:
            t = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, self._run_cell(cell, s0, s1, weights[t], edge_w[t])
        return self._head(s1)

    def forward_discrete(self, x: torch.Tensor, choice: dict) -> torch.Tensor:
        """Run one sampled architecture: ``choice[cell_type][node]`` = [(input, op_index), ...]."""
        s0, s1 = self._stem(x)
        for cell in self.cells:
            s0, s1 = s1, self._run_cell(cell.forward_discrete, s0, s1,
                                        choice["reduce" if cell.reduction else "normal"])
        return self._head(s1)

    def forward_sampled(self, x: torch.Tensor, weights: dict, index: dict) -> torch.Tensor:
        """One sampled op per edge (GDAS): ``weights[cell_type]`` (edges x ops, the hard sample) and
        ``index[cell_type]`` (one op index per edge, plain ints)."""
        s0, s1 = self._stem(x)
        for cell in self.cells:
            t = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, self._run_cell(cell.forward_sampled, s0, s1, weights[t], index[t])
        return self._head(s1)

    @contextlib.contextmanager
    def no_checkpoint(self):
        """Run without recomputation inside the block (e.g. under ``functional_call``, whose
        substituted weights are gone by the time a checkpoint would recompute)."""
        memory, self.memory = self.memory, "default"
        try:
            yield
        finally:
            self.memory = memory

    def _run_cell(self, fn, *args):
        """``fn(*args)``, recomputed in the backward pass when ``memory == "checkpoint"``."""
        if self.memory == "checkpoint" and torch.is_grad_enabled():
            cell = fn if isinstance(fn, nn.Module) else fn.__self__
            return checkpoint(fn, *args, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), keep_batch_norm_stats(cell)))
        return fn(*args)
