"""ENAS micro (CIFAR-10) with a fixed arc, after melodyguan/enas ``src/cifar10/micro_child.py``.

``_model``: stem 3x3 conv ("SAME", no bias) to ``3 * out_filters`` + BN, used as both inputs of the
first layer; ``num_layers + 2`` layers, of which ``pool_layers = [L // 3, 2 (L // 3) + 1]`` are
reduction layers (reduce arc, stride 2 on the cell inputs, ``out_filters`` doubled); each layer reads
``[h_{i-1}, h_i]``.  ``_fixed_layer``: ``_maybe_calibrate_size`` (h_{i-1}: ReLU + factorized reduction
on a resolution mismatch, else ReLU-1x1-BN on a channel mismatch; h_i: ReLU-1x1-BN on a channel
mismatch), then ``layer_base`` ReLU-1x1-BN on h_i; ops as in TF-slim except that a stride-2 identity
is a factorized reduction (no ReLU) and a pool's channel projection is ReLU-1x1-BN; drop path after
every op but the identity, scaled by ``(layer_id + 1) / (num_layers + 2)``; ``_fixed_combine``
concatenates the unused states, factorized-reducing the ones at a finer resolution than the
coarsest.  Head: ReLU -> global average pool -> dropout -> FC without bias.  Auxiliary head (training
only) after layer ``pool_layers[-1] + 1``: ReLU -> AvgPool 5 stride 3 VALID -> 1x1 conv 128 -> BN ->
ReLU -> hw x hw conv ("SAME") 768 -> BN -> ReLU -> global average pool -> FC without bias, where hw
is the pooled extent at ``img_size`` (2 for 32x32 inputs; any input size runs).

The cell is :class:`~nasnetzoo.models.nasnet.TFCell` with ENAS's options; the genotype is in TF order
(state 0 = h_i), i.e. ENAS's ``fixed_arc`` ids swapped (``genotypes/enas.yaml``).
BN epsilon 1e-5 (``image_ops.batch_norm``).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.fx
from torch import nn

from ..errors import ConfigError
from ..genotype import Genotype
from ..ops.padding import Conv2dSame
from .base import CellNetwork
from .nasnet import ConvBn, TFCell, aux_pool_if_fits, plan_layers

__all__ = ["ENASNet", "ENASAuxHead"]

torch.fx.wrap("aux_pool_if_fits")  # fx patches each module's own name for it (see models/nasnet.py)


class ENASAuxHead(nn.Module):
    """``micro_child._model``'s auxiliary head (see the module docstring)."""

    def __init__(self, C_in: int, num_classes: int, kernel_size: int, bn_eps: float) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.proj = nn.Conv2d(C_in, 128, 1, bias=False)
        self.proj_bn = nn.BatchNorm2d(128, eps=bn_eps)
        self.act0 = nn.ReLU()
        self.conv = Conv2dSame(128, 768, max(1, int(kernel_size)))
        self.conv_bn = nn.BatchNorm2d(768, eps=bn_eps)
        self.act1 = nn.ReLU()
        self.classifier = nn.Linear(768, num_classes, bias=False) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        device = self.proj.weight.device
        self.classifier = (nn.Linear(768, num_classes, bias=False) if num_classes > 0
                           else nn.Identity()).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = aux_pool_if_fits(self.act(x))
        x = self.act0(self.proj_bn(self.proj(x)))
        x = self.act1(self.conv_bn(self.conv(x)))
        return self.classifier(x.mean((2, 3)))


class ENASNet(CellNetwork):
    """The ENAS micro child network; published CIFAR-10 model: ``num_layers=15, out_filters=36``."""

    first_conv = "stem.conv"  # the stem conv (timm's cfg key: adapted for other in_chans)

    def __init__(self, genotype: Union[Genotype, dict, str], *, num_layers: int = 15, out_filters: int = 36,
                 num_classes: int = 10, in_chans: int = 3, auxiliary: bool = False,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, bn_eps: float = 1e-5,
                 img_size: int = 32) -> None:
        super().__init__(num_classes, in_chans, drop_rate)
        genotype = Genotype.parse(genotype)
        if genotype.family != "nasnet":
            raise ConfigError(f"ENASNet builds 'nasnet'-family genotypes (TF order, state 0 = h_i); "
                              f"{genotype.name or 'this genotype'} is of family {genotype.family!r}.")
        if int(num_layers) < 0 or int(out_filters) < 1:
            raise ConfigError(f"num_layers={num_layers} must be >= 0 and out_filters={out_filters} >= 1.")
        self.genotype = genotype
        num_layers, C = int(num_layers), int(out_filters)
        pool_distance = num_layers // 3
        self.pool_layers = [pool_distance, 2 * pool_distance + 1]
        aux_layer = self.pool_layers[-1] + 1
        total = num_layers + 2
        op_options = dict(bn_eps=bn_eps, identity_reduce="factorized", pool_proj_act=True)

        self.stem = ConvBn(in_chans, 3 * C, 3, 1, "same", bn_eps)
        metas: list[Optional[tuple[int, int]]] = [None, (3 * C, 0)]
        self._plan: list[tuple[str, int, int]] = []
        self._aux_index: Optional[int] = None
        prev, cur = 1, 1  # layers = [x, x]
        for layer_id in range(total):
            is_reduction = layer_id in self.pool_layers
            if is_reduction:
                C *= 2
            cell = TFCell(genotype.reduce if is_reduction else genotype.normal, cur=metas[cur],
                          prev=metas[prev], C=C, stride=2 if is_reduction else 1,
                          drop_path_scale=(layer_id + 1) / total, op_options=op_options, bn_eps=bn_eps,
                          calibrate_current=True, combine="enas")
            name = f"layer_{layer_id}"
            self.add_module(name, cell)
            self._plan.append((name, cur, prev))
            metas.append((cell.out_channels, cell.out_level))
            prev, cur = cur, len(metas) - 1
            if layer_id == aux_layer:
                self._aux_index = cur

        C_final, _ = metas[-1]
        self._init_head(C_final, pre_act=True)
        if auxiliary and self._aux_index is not None:
            C_aux, level = metas[self._aux_index]
            h = int(img_size)
            for _ in range(level):
                h = -(-h // 2)
            self.auxiliary_head = ENASAuxHead(C_aux, num_classes, (h - 5) // 3 + 1 if h >= 5 else h, bn_eps)
        self._set_layers(plan_layers("stem", self._plan), metas[1:], self._aux_index, stem_steps=1)
        self.drop_path_prob = drop_path_rate

    @staticmethod
    def _make_classifier(num_features: int, num_classes: int) -> nn.Module:
        # micro_child: ``w = create_weight("w", [inp_c, 10]); x = tf.matmul(x, w)`` -- no bias.
        return nn.Linear(num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()
