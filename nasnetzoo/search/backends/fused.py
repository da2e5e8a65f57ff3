"""The mixed operation of a supernet edge, computed once per edge instead of once per op.

``MixedOp.forward`` (search/supernet.py) is the official code's ``sum(w_k * op_k(x))``.  This
module computes the same function, within float reordering, with less work and far fewer tensors
kept for the backward pass:

* **the shared ReLU**: every conv op (and ``FactorizedReduce``) starts with ``relu(x)``; it is
  computed, and kept for backward, once per edge instead of once per op;
* **the zero op** adds ``w * 0``: nothing in the forward, an exact 0 for its weight's gradient
  either way, so it is skipped (a zeros tensor per edge less);
* **the weighted sum folds each weight into the op's last BatchNorm**: ``w * BN(h)`` with a
  non-affine BatchNorm is ``BN(h)`` with scale ``w``, and BatchNorm's backward needs only its
  input (kept anyway), so autograd no longer keeps every op's output a second time for
  ``d/dw``; PC-DARTS's edge weight ``beta`` is folded in the same way (``beta * w_k``);
* **max pooling keeps no indices** (:func:`..memory_ops.max_pool_recomputed`): its argmax (int64,
  twice the bytes of the map) is recomputed from the input, kept anyway, when backward needs it.
* **on the CPU**, the 5x5/dilated depthwise convolutions, the 1x1 convolutions and the 3x3 pools
  run on the kernels of :mod:`.cpu_kernels`, which PyTorch's NCHW CPU kernels are slower than.

Ops are recognised by their exact type (``type(op) is SepConv``): their forward is known to be the
chain of layers this module runs.  Any other op, a subclass of a known one included, runs its own
``forward``, scaled by its weight.

A search cell runs the edges into each node side by side (:mod:`.node_mix`, with the pieces of
this module); :func:`mixed` is one edge on its own.  The op modules (and so the state-dict keys)
are unchanged: this only decides how they are called.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.darts import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from ..memory_ops import channel_shuffle, max_pool as index_free_max_pool
from .cpu_kernels import fast_layer, max_pool_kernel
from .policy import DEFAULT_POLICY, FastPathPolicy

# The ops whose forward is ``self.op(x)``, a chain of layers (exact types: a subclass may override forward).
CHAIN_OPS = (SepConv, DilConv, ReLUConvBN)
IDENTITY_OPS = (nn.Identity, Identity)


def is_zero(op: nn.Module) -> bool:
    return type(op) is Zero


def is_identity(op: nn.Module) -> bool:
    return type(op) in IDENTITY_OPS


def is_factorized_reduce(op: nn.Module) -> bool:
    return type(op) is FactorizedReduce


# ---------------------------------------------------------------- max pooling without indices
def max_pool(pool: nn.MaxPool2d, x: torch.Tensor, policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``pool(x)`` keeping no indices (:func:`..memory_ops.max_pool`), with the CPU forward kernel."""
    return index_free_max_pool(pool, x, max_pool_kernel(policy))


# ---------------------------------------------------------------- BatchNorm scaled by an op weight
def batch_norm_step(bn: nn.BatchNorm2d) -> tuple[float, bool, bool]:
    """What ``bn(x)`` does before normalising: counts the batch, and returns (momentum, whether
    batch statistics are used, whether running statistics are read or updated), as
    ``nn.BatchNorm2d.forward`` decides them."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return momentum, bn.training or bn.running_mean is None, not bn.training or bn.track_running_stats


def batch_norm_scale(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``scale`` (one value, or one per channel) as the weight of a BatchNorm of ``x``."""
    # BatchNorm takes fp32 parameters beside bf16/fp16 activations (autocast), else the input's dtype.
    return scale.to(torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype).expand(x.shape[1])


def scaled_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale * bn(x)`` for a non-affine BatchNorm, as one BatchNorm whose weight is ``scale``.

    The running statistics and ``num_batches_tracked`` are updated exactly as ``bn(x)`` would;
    only the output is scaled.
    """
    momentum, use_batch_stats, track = batch_norm_step(bn)
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        batch_norm_scale(scale, x), None, use_batch_stats, momentum, bn.eps)


def foldable_bn(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d and not module.affine


# ---------------------------------------------------------------- one edge
def run_layers(modules: Sequence[nn.Module], h: torch.Tensor,
               policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    for m in modules:
        fast = fast_layer(m, h, policy)   # None where no CPU kernel applies
        if fast is not None:
            h = fast
        else:
            h = max_pool(m, h, policy) if type(m) is nn.MaxPool2d else m(h)
    return h


def factorized_reduce(op: FactorizedReduce, r: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale * op(x)`` given ``r = relu(x)`` (the op's own ReLU, shared), for an op of exactly
    type FactorizedReduce (its forward, written out)."""
    shifted = r[:, :, 1:, 1:]
    pad_h, pad_w = r.shape[2] % 2, r.shape[3] % 2
    if pad_h or pad_w:
        shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
    h = torch.cat([op.conv_1(r), op.conv_2(shifted)], dim=1)
    return scaled_batch_norm(op.bn, h, scale) if foldable_bn(op.bn) else scale * op.bn(h)


def op_layers(op: nn.Module) -> Optional[list]:
    """The op as a flat list of layers when it is a chain of exactly known type (SepConv, DilConv,
    ReLUConvBN, a plain Sequential such as pool + BN); None for any other op (it runs its forward)."""
    if type(op) in CHAIN_OPS:
        return list(op.op)
    if type(op) is nn.Sequential:
        return list(op)
    return None


def single(op: nn.Module, x: torch.Tensor, policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``op(x)`` (one sampled op of PARSEC, a cell's preprocessing), with the CPU kernels and max
    pooling that keeps no indices."""
    layers = op_layers(op)
    return op(x) if layers is None else run_layers(layers, x, policy)


def mixed(ops: Sequence[nn.Module], x: torch.Tensor, weights: torch.Tensor,
          policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``sum_k weights[k] * ops[k](x)``, sharing and folding what it can (see the module docstring)."""
    relu = None
    out = None
    for k, op in enumerate(ops):
        w = weights[k]
        if is_zero(op):
            continue
        if is_identity(op):
            term = w * x
        elif is_factorized_reduce(op):
            relu = F.relu(x) if relu is None else relu
            term = factorized_reduce(op, relu, w)
        else:
            layers = op_layers(op)
            if layers is None:               # an op this module does not know: run it whole
                term = w * op(x)
            else:
                h = x
                if layers and type(layers[0]) is nn.ReLU:
                    relu = F.relu(x) if relu is None else relu
                    h, layers = relu, layers[1:]
                if layers and foldable_bn(layers[-1]):
                    term = scaled_batch_norm(layers[-1], run_layers(layers[:-1], h, policy), w)
                else:
                    term = w * run_layers(layers, h, policy)
        out = term if out is None else out + term
    if out is None:                          # only zero ops on this edge
        zero = next(op for op in ops if is_zero(op))
        return weights[0] * zero(x)
    return out


# ---------------------------------------------------------------- one supernet edge (a MixedOp)
def edge_forward(edge: nn.Module, x: torch.Tensor, weights: torch.Tensor, edge_weight: Optional[torch.Tensor],
                 policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``edge(x, weights, edge_weight)`` for a search MixedOp: PC-DARTS's beta folded into the op
    weights and applied to the bypass, the ops mixed by :func:`mixed`."""
    part, bypass = edge.split_channels(x)
    if edge_weight is not None:
        weights = weights * edge_weight
    out = mixed(edge.ops, part, weights, policy)
    if bypass is None:
        return out
    if edge.bypass_pool is not None:
        bypass = max_pool(edge.bypass_pool, bypass, policy)
    if edge_weight is not None:
        bypass = edge_weight * bypass
    return channel_shuffle(torch.cat([out, bypass], dim=1), edge.k)


def edge_run(edge: nn.Module, x: torch.Tensor, op_index: int,
             policy: FastPathPolicy = DEFAULT_POLICY) -> torch.Tensor:
    """``edge.run(x, op_index)``: one op of a search MixedOp (PARSEC's discrete forward)."""
    part, bypass = edge.split_channels(x)
    out = single(edge.ops[op_index], part, policy)
    if bypass is not None and edge.bypass_pool is not None:
        bypass = max_pool(edge.bypass_pool, bypass, policy)
    return out if bypass is None else channel_shuffle(torch.cat([out, bypass], dim=1), edge.k)
