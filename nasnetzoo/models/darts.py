"""DARTS-family evaluation networks: the official ``NetworkCIFAR`` and ``NetworkImageNet``.

One builder serves every DARTS-family genotype (DARTS, PC-DARTS, P-DARTS, SNAS, GDAS): the
official ``cnn/model.py`` of DARTS is shared, nearly verbatim, by all of them.  Module names match
the official code (``stem``/``stem0``/``stem1``, ``cells.{i}.preprocess0``, ``cells.{i}._ops.{k}``,
``auxiliary_head.features.*``, ``classifier``) so official checkpoints load by name.

Changes from the official code that add or rename no parameter:

* global pooling is adaptive (the official ImageNet net ends with ``AvgPool2d(7)``), and
  ``FactorizedReduce`` pads odd maps, so any input size works;
* the auxiliary head shrinks its 5x5 pool on maps too small for it and ends with an adaptive
  pool (both the identity at the designed 32 / 224 px inputs);
* drop path lives in ``DropPath`` modules (one per non-identity op, held apart from ``_ops``),
  controlled by the ``drop_path_prob`` property instead of an argument of ``forward``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..genotype import Cell, Genotype
from ..ops.darts import POOL_BN_MODES, FactorizedReduce, ReLUConvBN
from ..ops.registry import build_op
from .base import CellNetwork
from .layers import DropPath

__all__ = [
    "DartsCell", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet",
    "DartsCIFARNetwork", "DartsImageNetNetwork",
]

GenotypeLike = Union[Genotype, Mapping, str, Path]


# ==================================================================== cell
class DartsCell(nn.Module):
    """A DARTS cell (official ``model.py Cell``): two preprocessed inputs, summed op pairs, concat.

    ``_ops[k]`` is edge ``k`` of the flat genotype list (node ``k // 2 + 2``); in a reduction
    cell the ops reading the cell inputs (states 0 and 1) have stride 2.
    """

    def __init__(self, cell: Cell, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, op_options: Optional[dict] = None) -> None:
        super().__init__()
        op_options = dict(op_options or {})
        affine = op_options.get("affine", True)
        self.reduction = reduction
        # State 0 comes from two cells back: after a reduction it is twice the size of state 1.
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=affine) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine)

        edges = cell.edges
        self._ops = nn.ModuleList(
            build_op(e.op, C, C, 2 if reduction and e.input < 2 else 1, family="darts", **op_options)
            for e in edges)
        # Official Cell.forward drops every op output except the identity's; keeping the
        # DropPath modules in their own list leaves the state-dict keys of ``_ops`` untouched.
        self.drop_paths = nn.ModuleList(
            nn.Identity() if isinstance(op, nn.Identity) else DropPath() for op in self._ops)
        self._indices = tuple(e.input for e in edges)
        self._concat = tuple(cell.concat)
        self.multiplier = len(self._concat)
        self.out_channels = self.multiplier * C

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(0, len(self._ops), 2):
            states.append(self._edge(k, states) + self._edge(k + 1, states))
        return torch.cat([states[i] for i in self._concat], dim=1)

    def _edge(self, k: int, states: list) -> torch.Tensor:
        return self.drop_paths[k](self._ops[k](states[self._indices[k]]))


# ==================================================================== auxiliary heads
def _fit(n: int, kernel_size: int, stride: int) -> tuple[int, int]:
    if n >= kernel_size + stride:
        return kernel_size, stride
    return min(kernel_size, max(n - 1, 1)), 1


def aux_pool(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """``_AuxPool``'s pool (see there); a function so that torch.fx records it as one call."""
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        x = F.pad(x, (0, int(w < 2), 0, int(h < 2)), mode="replicate")
        h, w = x.shape[-2:]
    (kh, sh), (kw, sw) = _fit(h, kernel_size, stride), _fit(w, kernel_size, stride)
    return F.avg_pool2d(x, (kh, kw), stride=(sh, sw), padding=0, count_include_pad=False)


torch.fx.wrap("aux_pool")


class _AuxPool(nn.Module):
    """``AvgPool2d(kernel, stride)`` of the official aux heads, shrunk on maps too small for it.

    The 2x2 conv that follows needs a pooled map of at least 2x2, i.e. ``size >= kernel + stride``
    (exactly the designed 8x8 CIFAR / 7x7 ImageNet maps).  Smaller maps use stride 1 and a kernel
    that leaves 2x2; a 1-pixel map is replicated to 2 first.  No parameters, so no keys.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aux_pool(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride} (shrinks on small maps)"


class _AuxiliaryHead(nn.Module):
    """ReLU, 5x5 avg pool, 1x1 conv 128 + BN + ReLU, 2x2 conv 768 (+ BN) + ReLU, linear."""

    def __init__(self, C: int, num_classes: int, pool_stride: int, bn: bool) -> None:
        super().__init__()
        layers = [
            nn.ReLU(inplace=False),  # its input is a cell output that later cells still read
            _AuxPool(5, pool_stride),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if bn:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        # Identity at the designed sizes (the 2x2 conv leaves 1x1); makes larger inputs work.
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes)

    @staticmethod
    def _make_classifier(num_classes: int) -> nn.Module:
        return nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        device = self.features[2].weight.device
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.features(x)).flatten(1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """Official ``AuxiliaryHeadCIFAR`` (8x8 input, pool stride 3, BN after the 768-ch conv)."""

    def __init__(self, C: int, num_classes: int, bn: bool = True) -> None:
        super().__init__(C, num_classes, pool_stride=3, bn=bn)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """Official ``AuxiliaryHeadImageNet`` (7x7 input, pool stride 2).

    DARTS and PC-DARTS have no ``BatchNorm2d(768)`` here (commented out as a typo kept for
    consistency with their paper), hence ``bn=False`` by default; P-DARTS has it (``bn=True``,
    key ``features.6``).
    """

    def __init__(self, C: int, num_classes: int, bn: bool = False) -> None:
        super().__init__(C, num_classes, pool_stride=2, bn=bn)


# ==================================================================== networks
def _darts_genotype(genotype: GenotypeLike) -> Genotype:
    if not isinstance(genotype, (Genotype, Mapping, str, Path)):
        raise ConfigError(f"genotype must be a Genotype (or a genotype file, dict or "
                          f"'Genotype(...)' string), got {type(genotype).__name__}.")
    genotype = Genotype.parse(genotype)
    if genotype.family != "darts":
        raise ConfigError(
            f"genotype {genotype.name or str(genotype)[:60]!r} is of the {genotype.family!r} family; "
            "the DARTS builders take family='darts' genotypes (NASNet-family cells have their own "
            "builder).")
    for s in genotype.reduce.concat:
        if s < 2:
            raise ConfigError(
                f"reduce cell concat {list(genotype.reduce.concat)} includes input state {s}, "
                "which has twice the spatial size of the cell's nodes; concat only nodes (>= 2).")
    return genotype


class _DartsNetwork(CellNetwork):
    """Cell stacking, drop path and forward shared by the CIFAR and ImageNet networks."""

    def __init__(self, genotype: GenotypeLike, *, C: int, layers: int, num_classes: int,
                 in_chans: int, drop_rate: float, pool_bn: Optional[str]) -> None:
        super().__init__(num_classes, in_chans, drop_rate)
        self.genotype = _darts_genotype(genotype)
        if isinstance(C, bool) or not isinstance(C, int) or C < 1:
            raise ConfigError(f"C (initial cell channels) must be a positive integer, got {C!r}.")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"layers (number of cells) must be a positive integer, got {layers!r}.")
        if pool_bn not in POOL_BN_MODES:
            raise ConfigError(f"pool_bn={pool_bn!r} is not one of {POOL_BN_MODES}: None (DARTS), "
                              "'affine' (SNAS) or 'buffers' (old GDAS).")
        self.C = C
        self.layers = layers
        self.op_options = {"affine": True, "pool_bn": pool_bn}
        # Official: reductions at layers//3 and 2*layers//3, aux head after 2*layers//3.
        self.reduction_indices = tuple(sorted({layers // 3, 2 * layers // 3}))
        self.aux_index = 2 * layers // 3

    def _build_cells(self, stem: list[tuple[str, tuple[int, ...], int, int]], s0: int, s1: int,
                     reduction_prev: bool) -> tuple[int, int]:
        """Stack the cells after the stem and record the forward plan.

        ``stem``: ``(module name, inputs, channels, level)`` per stem part; cell 0 reads outputs
        ``s0`` and ``s1``.  Returns the channels of the aux head's input and of the last cell."""
        layers = [(name, inputs) for name, inputs, _, _ in stem]
        metas = [(C, level) for _, _, C, level in stem]
        self.cells = nn.ModuleList()
        C_curr, C_aux = self.C, metas[s1 - 1][0]
        C_prev_prev, C_prev = metas[s0 - 1][0], metas[s1 - 1][0]
        level, aux_output = metas[s1 - 1][1], None
        for i in range(self.layers):
            reduction = i in self.reduction_indices
            if reduction:
                C_curr *= 2
                level += 1
            cell = DartsCell(self.genotype.reduce if reduction else self.genotype.normal,
                             C_prev_prev, C_prev, C_curr, reduction, reduction_prev, self.op_options)
            self.cells.append(cell)
            layers.append((f"cells.{i}", (s0, s1)))
            metas.append((cell.out_channels, level))
            s0, s1 = s1, len(layers)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.out_channels  # len(concat) * C, not a fixed 4
            if i == self.aux_index:
                C_aux, aux_output = C_prev, s1
        self._set_layers(layers, metas, aux_output, stem_steps=len(stem))
        return C_aux, C_prev

    def _init_heads(self, C_aux: int, num_features: int, auxiliary: bool, aux_head: type,
                    aux_bn: bool) -> None:
        # The aux head is registered before the classifier so that the state dict lists keys in
        # the official order (some converters match checkpoints by order and shape).
        if auxiliary:
            self.auxiliary_head = aux_head(C_aux, self.num_classes, bn=aux_bn)
        self._init_head(num_features)


class DartsCIFARNetwork(_DartsNetwork):
    """DARTS ``NetworkCIFAR`` (quark0/darts ``cnn/model.py``; Liu et al., ICLR 2019).

    Stem 3x3 conv to ``3C`` + BN, ``layers`` cells with reductions at ``layers//3`` and
    ``2*layers//3``, auxiliary head (training only) after cell ``2*layers//3``.  Defaults are the
    published CIFAR-10 setting (C=36, 20 cells).  ``pool_bn="affine"`` gives SNAS's pools.
    """

    first_conv = "stem.0"  # the stem conv (timm's cfg key: adapted for other in_chans)

    def __init__(self, genotype: GenotypeLike, *, C: int = 36, layers: int = 20,
                 num_classes: int = 10, in_chans: int = 3, auxiliary: bool = False,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 pool_bn: Optional[str] = None, aux_bn: bool = True) -> None:
        super().__init__(genotype, C=C, layers=layers, num_classes=num_classes, in_chans=in_chans,
                         drop_rate=drop_rate, pool_bn=pool_bn)
        C_stem = 3 * C  # stem_multiplier = 3
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        C_aux, C_last = self._build_cells([("stem", (0,), C_stem, 0)], 1, 1, reduction_prev=False)
        self._init_heads(C_aux, C_last, auxiliary, AuxiliaryHeadCIFAR, aux_bn)
        self.drop_path_prob = drop_path_rate


class DartsImageNetNetwork(_DartsNetwork):
    """DARTS ``NetworkImageNet`` (quark0/darts ``cnn/model.py``; Liu et al., ICLR 2019).

    ``stem0`` (two stride-2 3x3 convs) and ``stem1`` (one more) take 224 px to 28x28; cell 0
    reads ``stem0``'s 56x56 map through a FactorizedReduce.  Reductions at ``layers//3`` and
    ``2*layers//3``, auxiliary head after cell ``2*layers//3``.  ``aux_bn=False`` reproduces the
    aux head of DARTS / PC-DARTS (no BN after its 768-ch conv); P-DARTS passes ``aux_bn=True``.
    """

    first_conv = "stem0.0"  # the stem conv (timm's cfg key: adapted for other in_chans)

    def __init__(self, genotype: GenotypeLike, *, C: int = 48, layers: int = 14,
                 num_classes: int = 1000, in_chans: int = 3, auxiliary: bool = False,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 pool_bn: Optional[str] = None, aux_bn: bool = False) -> None:
        super().__init__(genotype, C=C, layers=layers, num_classes=num_classes, in_chans=in_chans,
                         drop_rate=drop_rate, pool_bn=pool_bn)
        if C % 2:
            raise ConfigError(f"the ImageNet network needs an even C (its stem has C/2 channels "
                              f"and cell 0 halves a C-channel map by FactorizedReduce), got C={C}.")
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_chans, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            # Not in-place (the official one is): stem0's output is also cell 0's state 0.
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # stem0 ends at 1/4 of the input (two stride-2 convs), stem1 at 1/8; cell 0 reads both.
        C_aux, C_last = self._build_cells([("stem0", (0,), C, 2), ("stem1", (1,), C, 3)], 1, 2,
                                          reduction_prev=True)
        self._init_heads(C_aux, C_last, auxiliary, AuxiliaryHeadImageNet, aux_bn)
        self.drop_path_prob = drop_path_rate
