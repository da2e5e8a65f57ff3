"""A cell node's incoming edges computed side by side, as one edge that many times as wide.

Node ``i`` of a search cell sums ``i + 2`` mixed edges: the same ops, each edge on its own input
with its own weights.  With the edges' inputs concatenated along channels, ``E`` edges' ops become
one op each: a depthwise conv stays depthwise over ``E * C`` channels, a 1x1 conv becomes a 1x1
conv of ``E`` groups, a BatchNorm one BatchNorm over all channels (the edges' running statistics
gathered before and written back after), a pool one pool.  So a step runs ``E`` times fewer and
wider kernels, which the CPU runs faster at the supernet's 4-64 channels per op
(docs/search_speed.md).  It is the sum of :func:`.fused.mixed` over the edges (the same function
within float reordering), with every fusion of that module kept: the shared ReLU, skipped zero
ops, op weights as BatchNorm scales, PC-DARTS's edge weights folded in.

Edges are batched when they share stride and input shape (a reduction cell's stride-2 edges are
one group, its stride-1 edges another).  A group whose ops this module does not know (another
op set, a subclass of a known op, convs with bias, affine BatchNorms, ...) is summed edge by edge
with :func:`.fused.edge_forward`, where an unknown op runs its own ``forward``.
Parameters and buffers stay in the edges' own modules: state-dict keys are unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..memory_ops import channel_shuffle
from .cpu_kernels import conv_kernel
from .fused import (batch_norm_scale, batch_norm_step, edge_forward, factorized_reduce, foldable_bn, is_factorized_reduce,
                    is_identity, is_zero, max_pool, op_layers, run_layers)
from .policy import DEFAULT_POLICY, FastPathPolicy

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


# ---------------------------------------------------------------- which edges can run side by side
def _layer_key(layer: nn.Module):
    """What must be equal for layers of several edges to run as one (weights aside); None for a
    layer this module cannot run side by side (a conv with bias or non-zero padding mode, an affine
    BatchNorm or one without running statistics, any other kind)."""
    kind = type(layer)
    if kind is nn.ReLU:
        return kind
    if kind is nn.Conv2d and layer.bias is None and layer.padding_mode == "zeros":
        return (kind, layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                layer.dilation, layer.groups)
    if kind is nn.BatchNorm2d and not layer.affine and layer.track_running_stats:
        return (kind, layer.num_features, layer.eps, layer.momentum, layer.training)
    if kind in _POOLS:
        return (kind, repr(layer))
    return None


def _op_key(op: nn.Module):
    """None where this module cannot run the op side by side with its twins on other edges."""
    if is_zero(op) or is_identity(op) or is_factorized_reduce(op):
        return type(op), getattr(op, "stride", None)
    layers = op_layers(op)
    if not layers:
        return None
    keys = [_layer_key(m) for m in layers]
    if None in keys or not (keys[0] is nn.ReLU or keys[0][0] in _POOLS):
        return None
    return tuple(keys)


def _edge_key(edge: nn.Module):
    """What must be equal for edges to run side by side (None where this one cannot).  It reads
    every layer of every op (a quarter of a millisecond a node), so it is kept on the edge, valid
    while the edge has the same op modules and training flag."""
    tag = (edge.training, tuple(map(id, edge.ops)))
    cached = edge.__dict__.get("_side_by_side_key")
    if cached is not None and cached[0] == tag:
        return cached[1]
    keys = tuple(_op_key(op) for op in edge.ops)
    key = None if None in keys else (edge.k, edge.stride, edge.bypass_pool is None, keys)
    edge.__dict__["_side_by_side_key"] = (tag, key)   # a plain attribute, not module state
    return key


def _batchable(edges: Sequence[nn.Module]) -> bool:
    first = _edge_key(edges[0])
    return first is not None and all(_edge_key(e) == first for e in edges[1:])


# ---------------------------------------------------------------- layers of E edges as one
def _conv(convs: Sequence[nn.Conv2d], h: torch.Tensor, policy: FastPathPolicy) -> torch.Tensor:
    conv = convs[0]
    weight = conv.weight if len(convs) == 1 else torch.cat([c.weight for c in convs])
    groups = conv.groups * len(convs)
    fast = conv_kernel(conv, h, weight, groups, policy)   # None unless a CPU kernel applies
    if fast is not None:
        return fast
    return F.conv2d(h, weight, None, conv.stride, conv.padding, conv.dilation, groups)


def _batch_norm(bns: Sequence[nn.BatchNorm2d], h: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    """Each edge's (non-affine) BatchNorm on its channels of ``h``, times ``scale`` (per channel)."""
    bn = bns[0]
    if len(bns) > 1 and bn.training and bn.momentum is not None:
        # Every edge counts the batch, as bn(x) would, in one op: a node's many tiny ops cost more
        # in dispatch than in arithmetic (docs/search_speed.md).  Side-by-side BatchNorms track
        # running statistics (_layer_key), so in training they use and update batch statistics.
        torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
        momentum, use_batch_stats, track = bn.momentum, True, True
    else:   # a cumulative average (momentum None) reads each edge's own count
        for other in bns[1:]:
            batch_norm_step(other)
        momentum, use_batch_stats, track = batch_norm_step(bn)
    mean = var = None
    if track:
        mean = bn.running_mean if len(bns) == 1 else torch.cat([b.running_mean for b in bns])
        var = bn.running_var if len(bns) == 1 else torch.cat([b.running_var for b in bns])
    weight = None if scale is None else batch_norm_scale(scale, h)
    out = F.batch_norm(h, mean, var, weight, None, use_batch_stats, momentum, bn.eps)
    if track and use_batch_stats and len(bns) > 1:   # F.batch_norm updated the gathered copies
        with torch.no_grad():
            torch._foreach_copy_([b.running_mean for b in bns] + [b.running_var for b in bns],
                                 mean.split(bn.num_features) + var.split(bn.num_features))
    return out


def _chain(chains: Sequence[list], parts: Sequence[torch.Tensor], relu: torch.Tensor,
           scale: torch.Tensor, policy: FastPathPolicy) -> torch.Tensor:
    """``scale * chain(x)`` for each edge's chain of layers (ReLU or pool first), side by side."""
    first = chains[0][0]
    if type(first) is nn.ReLU:
        h = relu
    else:   # a pool: per edge (a max pool keeps its input for backward: the states, not a copy)
        pooled = [run_layers([chain[0]], x, policy) for chain, x in zip(chains, parts)]
        h = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)
    layers = list(zip(*chains))[1:]
    for depth, same in enumerate(layers):
        kind = type(same[0])
        last = depth == len(layers) - 1
        if kind is nn.ReLU:
            h = F.relu(h)
        elif kind is nn.Conv2d:
            h = _conv(same, h, policy)
        elif kind is nn.BatchNorm2d:
            h = _batch_norm(same, h, scale if last else None)
        elif kind is nn.MaxPool2d:
            h = max_pool(same[0], h, policy)
        else:
            h = same[0](h)
    if not (layers and foldable_bn(layers[-1][0])):
        h = h * scale.view(1, -1, 1, 1)
    return h


# ---------------------------------------------------------------- one node
def _add(total: Optional[torch.Tensor], *terms: torch.Tensor) -> Optional[torch.Tensor]:
    for term in terms:
        total = term if total is None else total + term
    return total


def _group(edges: Sequence[nn.Module], inputs: Sequence[torch.Tensor], weights: torch.Tensor,
           edge_weights: Optional[torch.Tensor], policy: FastPathPolicy) -> torch.Tensor:
    """The sum of ``edges[e](inputs[e], weights[e], edge_weights[e])``, edges side by side."""
    if edge_weights is not None:   # PC-DARTS's beta folded into the op weights and the bypass
        weights = weights * edge_weights.unsqueeze(1)
    splits = [edge.split_channels(x) for edge, x in zip(edges, inputs)]
    parts = [p for p, _ in splits]
    E, C = len(edges), parts[0].shape[1]
    relu = None
    side_by_side = None   # E * C channels: the terms computed side by side
    summed = None         # C channels: the terms computed edge by edge
    for k, op in enumerate(edges[0].ops):
        if is_zero(op):
            continue
        w = weights[:, k]
        if is_identity(op):
            summed = _add(summed, *(w[e] * x for e, x in enumerate(parts)))
            continue
        if relu is None:
            relu = F.relu(parts[0] if E == 1 else torch.cat(parts, dim=1))
        if is_factorized_reduce(op):   # only on a reduction cell's two input edges
            per_edge = relu.split(C, dim=1)
            summed = _add(summed, *(factorized_reduce(edge.ops[k], per_edge[e], w[e]) for e, edge in enumerate(edges)))
            continue
        scale = w if E == 1 else w.repeat_interleave(C)
        term = _chain([op_layers(edge.ops[k]) for edge in edges], parts, relu, scale, policy)
        side_by_side = _add(side_by_side, term)
    if side_by_side is not None:
        summed = _add(summed, side_by_side if E == 1 else side_by_side.unflatten(1, (E, C)).sum(1))
    if summed is None:   # only zero ops
        summed = _add(None, *(weights[e, 0] * edge.ops[0](x) for e, (edge, x) in enumerate(zip(edges, parts))))
    if splits[0][1] is None:
        return summed
    bypass = None
    for e, (edge, (_, rest)) in enumerate(zip(edges, splits)):
        if edge.bypass_pool is not None:
            rest = max_pool(edge.bypass_pool, rest, policy)
        bypass = _add(bypass, rest if edge_weights is None else edge_weights[e] * rest)
    return channel_shuffle(torch.cat([summed, bypass], dim=1), edges[0].k)


def node_sum(edges: Sequence[nn.Module], inputs: Sequence[torch.Tensor], weights: torch.Tensor,
             edge_weights: Optional[torch.Tensor] = None, policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``sum_e edges[e](inputs[e], weights[e], edge_weights[e])`` for the (fused) mixed edges into
    one node, each group of edges with the same stride and input shape run side by side."""
    groups: dict = {}
    for e, (edge, x) in enumerate(zip(edges, inputs)):
        groups.setdefault((edge.stride, tuple(x.shape), x.dtype), []).append(e)
    total = None
    for members in groups.values():
        group_edges = [edges[e] for e in members]
        group_inputs = [inputs[e] for e in members]
        index = slice(members[0], members[-1] + 1) if members == list(range(members[0], members[-1] + 1)) \
            else torch.tensor(members)
        w = weights[index]
        beta = None if edge_weights is None else edge_weights[index]
        if _batchable(group_edges):
            total = _add(total, _group(group_edges, group_inputs, w, beta, policy))
        else:
            total = _add(total, *(edge_forward(edge, x, w[i], None if beta is None else beta[i], policy)
                                  for i, (edge, x) in enumerate(zip(group_edges, group_inputs))))
    return total
