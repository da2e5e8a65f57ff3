"""One genotype-driven builder for the TF-defined NAS networks: NASNet-A, AmoebaNet-A, PNASNet-5.

It reproduces the wiring of tf-slim ``nasnet.py::_build_nasnet_base`` (NASNet, and AmoebaNet, whose
tensorflow/tpu ``model_builder._build_network_base`` is the same with ``skip_reduction_layer_input=0``)
and ``pnasnet.py::_build_pnasnet_base`` (``reduction="stride"``), with cells following
``nasnet_utils.NasNetABaseCell``:

* ``num_cells = 3 N`` normal cells; ``calc_reduction_layers(num_cells, 2)`` gives the indices where
  the resolution halves and ``filter_scaling`` doubles (``filter_scaling_rate``).  With
  ``reduction="cell"`` an extra reduction cell (``reduction_cell_{j}``, the genotype's reduce cell,
  stride 2) runs before the normal cell at that index; with ``reduction="stride"`` (PNASNet) the cell
  at that index is itself run with stride 2 (it uses the genotype's reduce cell, which for PNASNet-5
  is the normal cell).
* Cell base: the previous input goes through ``_reduce_prev_layer`` (ReLU + factorized reduction
  when its resolution differs, ReLU-1x1-BN when only its channels differ, unchanged otherwise; a
  missing one is replaced by the raw current input); the current input through ReLU-1x1-BN.  State 0
  is the current input, state 1 the previous one (TF order).  In a stride-2 cell the ops reading
  states 0/1 use stride 2.  Every op except ``none`` is followed by drop path.
* A node adds its two op outputs, or concatenates them (``combine: concat``, NASNet's search space),
  giving ``2 C`` channels; ops reading such a state map ``2 C -> C`` as TF's do on a channel mismatch.
* Output: the concat of ``cell.concat``, each state factorized-reduced (stride 2 on a resolution
  mismatch, 1x1 otherwise, no ReLU) when its shape differs from the last state's
  (``_combine_unused_states``).
* ImageNet stem: ``conv0`` 3x3 stride 2 VALID with ``int(32 * stem_multiplier)`` filters + BN, then
  two stem cells (the reduce cell at stride 2, or the strided cell for PNASNet) at filter scaling
  1/4 and 1/2; stem cell 0 has no previous input.  CIFAR stem: 3x3 conv ("SAME") to
  ``int(F * stem_multiplier)`` + BN, and the first cell has no previous input.
* ``skip_reduction_layer_input=True``: the normal cell after a reduction cell takes as previous
  input the reduction cell's own previous input (TF evaluates ``cell_outputs[-2]`` before appending
  the reduction output).  For ``reduction="stride"`` with it off, a strided cell keeps the previous
  cell's ``prev_layer``, as ``_build_pnasnet_base`` does.
* Auxiliary head (training only) on the output of the normal cell before the second reduction:
  ReLU -> AvgPool 5 stride 3 VALID -> 1x1 conv 128 -> BN -> ReLU -> conv over the whole remaining
  extent -> 768 -> BN -> ReLU -> FC.  The extent is fixed at build time from ``img_size`` (default
  224 for the ImageNet stem, 32 for CIFAR); for other input sizes the 128-channel map is
  adaptive-average-pooled to that extent first (and the 5x5 pool is skipped on maps under 5x5).
* Head (base class): ReLU -> global average pool -> dropout -> FC.
* ScheduledDropPath: one :class:`DropPath` per cell with ``scale = (cell_num + 1) / total_num_cells``
  (stem cells count, as TF's ``drop_connect_version='v3'`` layer ratio); the time ramp is the
  trainer's, through ``model.drop_path_prob``.

Module names follow the Cadene/timm ports: ``conv0.{conv,bn}``, ``cell_stem_{0,1}``, ``cell_{i}``,
``reduction_cell_{j}``, per cell ``conv_1x1`` (current input), ``conv_prev_1x1`` (previous input:
``act/conv/bn``, or ``path_1``/``path_2``/``final_path_bn`` for a factorized reduction) and
``comb_iter_{b}_{left,right}``.  (timm's ``nasnetalarge`` has the factorized-reduction paths directly
on ``cell_stem_1``/``cell_0``/``cell_6``/``cell_12`` and calls the classifier ``last_linear``; its
``pnasnet5large`` calls the stem conv ``conv_0``.)
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, GenotypeError
from ..genotype import Cell, Genotype
from ..ops.padding import Conv2dSame
from ..ops.registry import build_op
from ..ops.tf import ActConvBn, FactorizedReduction
from .base import CellNetwork
from .layers import DropPath

__all__ = ["NASNet", "TFCell", "AuxHead", "calc_reduction_layers", "plan_layers"]


def calc_reduction_layers(num_cells: int, num_reduction_layers: int = 2) -> list[int]:
    """TF-slim's ``calc_reduction_layers`` (same float arithmetic, so the same indices)."""
    return [int((float(pool_num) / (num_reduction_layers + 1)) * num_cells)
            for pool_num in range(1, num_reduction_layers + 1)]


class ConvBn(nn.Module):
    """Stem conv (no bias) + BN; ``padding="valid"`` or TF ``"same"``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: str,
                 bn_eps: float) -> None:
        super().__init__()
        if padding == "valid":
            self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride, 0, bias=False)
        else:
            self.conv = Conv2dSame(C_in, C_out, kernel_size, stride)
        self.bn = nn.BatchNorm2d(C_out, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class TFCell(nn.Module):
    """A TF-slim ``NasNetABaseCell`` built from a genotype cell.

    Inputs are described by ``(channels, level)`` where ``level`` counts the resolution halvings
    (the spatial sizes themselves are only known at run time).  ``prev=None`` means the cell has no
    previous input: state 1 is then the raw current input.

    ENAS (``micro_child._fixed_layer``) differs in two places, selected by options:
    ``calibrate_current=True`` puts an extra ReLU-1x1-BN (``conv_cur_calib``) on the current input
    when its channels differ from ``C`` (``_maybe_calibrate_size``'s ``pool_y``) before the always
    applied one (``layer_base``), and ``combine="enas"`` reduces only the concatenated states whose
    resolution is finer than the coarsest one (``_fixed_combine``).
    """

    def __init__(self, cell: Cell, *, cur: tuple[int, int], prev: Optional[tuple[int, int]], C: int,
                 stride: int, drop_path_scale: float, op_options: dict, bn_eps: float,
                 calibrate_current: bool = False, combine: str = "tf") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"cell stride {stride} is not 1 or 2.")
        C_cur, level = cur
        self.C = C
        self.stride = stride
        self.has_prev = prev is not None
        # ---- state 1: the previous input (_reduce_prev_layer)
        if prev is None:
            state1 = (C_cur, level)
        else:
            C_prev, prev_level = prev
            if prev_level != level:
                if prev_level != level - 1:
                    raise ConfigError(
                        f"the previous input is {level - prev_level} resolution levels away from the current "
                        "one; a cell can only bridge one (stride 2).  This happens with reduction='stride', "
                        "skip_reduction_layer_input=False and two strided cells in a row (N=1), where TF's "
                        "_build_pnasnet_base fails too; use skip_reduction_layer_input=True or a larger N.")
                self.conv_prev_1x1 = FactorizedReduction(C_prev, C, 2, act=True, bn_eps=bn_eps)
                state1 = (C, level)
            elif C_prev != C:
                self.conv_prev_1x1 = ActConvBn(C_prev, C, 1, bn_eps=bn_eps)
                state1 = (C, level)
            else:
                state1 = (C_prev, level)
        self.has_prev_conv = hasattr(self, "conv_prev_1x1")
        # ---- state 0: the current input (_cell_base)
        self.has_cur_calib = calibrate_current and C_cur != C
        if self.has_cur_calib:
            self.conv_cur_calib = ActConvBn(C_cur, C, 1, bn_eps=bn_eps)
            C_cur = C
        self.conv_1x1 = ActConvBn(C_cur, C, 1, bn_eps=bn_eps)
        states: list[tuple[int, int]] = [(C, level), state1]
        # ---- nodes
        self.edges: list[tuple[int, int]] = []
        self.drops: list[tuple[bool, bool]] = []
        for b, node in enumerate(cell.nodes):
            out_levels = []
            for side, edge in zip(("left", "right"), node):
                C_in, in_level = states[edge.input]
                op_stride = stride if edge.input < 2 else 1
                op = build_op(edge.op, C_in, C, op_stride, family="nasnet", **op_options)
                self.add_module(f"comb_iter_{b}_{side}", op)
                out_levels.append(in_level + (1 if op_stride == 2 else 0))
            if out_levels[0] != out_levels[1]:
                raise GenotypeError(f"node {b + 2}: its two inputs end at different resolutions "
                                    f"({[e.input for e in node]}), which cannot be combined.")
            self.edges.append((node[0].input, node[1].input))
            self.drops.append((node[0].op != "none", node[1].op != "none"))
            states.append((2 * C if cell.combine[b] == "concat" else C, out_levels[0]))
        self.concat_nodes = [how == "concat" for how in cell.combine]
        self.drop_path = DropPath(scale=drop_path_scale)
        # ---- output (_combine_unused_states)
        self.concat = list(cell.concat)
        self.reduced: list[bool] = []
        final_C, final_level = states[-1]
        if combine == "enas":
            final_level = max(states[s][1] for s in self.concat)
        elif combine != "tf":
            raise ConfigError(f"combine={combine!r} is not 'tf' or 'enas'.")
        out_channels = 0
        for s in self.concat:
            C_s, level_s = states[s]
            if combine == "tf":
                reduce = (C_s, level_s) != (final_C, final_level)
            else:
                reduce = level_s != final_level
            if reduce:
                if level_s != final_level and level_s != final_level - 1:
                    raise ConfigError(f"state {s} is {final_level - level_s} resolution levels from the "
                                      "cell output; the output combine can only bridge one.")
                self.add_module(f"reduction_{s}", FactorizedReduction(
                    C_s, final_C, 2 if level_s != final_level else 1, act=False, bn_eps=bn_eps))
                C_s = final_C
            self.reduced.append(reduce)
            out_channels += C_s
        self.out_channels = out_channels
        self.out_level = final_level

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.has_prev:
            p = x
        elif self.has_prev_conv:
            p = self.conv_prev_1x1(prev)
        else:
            p = prev
        h = self.conv_cur_calib(x) if self.has_cur_calib else x
        states = [self.conv_1x1(h), p]
        for b, ((i_left, i_right), (drop_left, drop_right)) in enumerate(zip(self.edges, self.drops)):
            left = getattr(self, f"comb_iter_{b}_left")(states[i_left])
            if drop_left:
                left = self.drop_path(left)
            right = getattr(self, f"comb_iter_{b}_right")(states[i_right])
            if drop_right:
                right = self.drop_path(right)
            states.append(torch.cat([left, right], 1) if self.concat_nodes[b] else left + right)
        out = [getattr(self, f"reduction_{s}")(states[s]) if reduce else states[s]
               for s, reduce in zip(self.concat, self.reduced)]
        return torch.cat(out, 1)


def aux_pool_if_fits(x: torch.Tensor) -> torch.Tensor:
    """The aux heads' 5x5 stride-3 VALID average pool, skipped on maps under 5x5."""
    if x.shape[-2] >= 5 and x.shape[-1] >= 5:
        return F.avg_pool2d(x, 5, stride=3, padding=0)
    return x


def fit_extent(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` adaptive-average-pooled to ``k x k`` unless it is that size already."""
    if x.shape[-2] != k or x.shape[-1] != k:
        return F.adaptive_avg_pool2d(x, (k, k))
    return x


# Size-dependent branches: torch.fx records one call each (ENAS's aux head uses the first too).
torch.fx.wrap("aux_pool_if_fits")
torch.fx.wrap("fit_extent")


class AuxHead(nn.Module):
    """TF-slim ``_build_aux_head`` (with the ReLU the caller applies first).

    ``kernel_size`` is the spatial extent after the 5x5/3 pool at the reference input size; other
    input sizes are adapted by an adaptive average pool to that extent (see the module docstring).
    """

    def __init__(self, C_in: int, num_classes: int, kernel_size: int, bn_eps: float) -> None:
        super().__init__()
        self.kernel_size = max(1, int(kernel_size))
        self.act = nn.ReLU()
        self.proj = nn.Conv2d(C_in, 128, 1, bias=False)
        self.aux_bn0 = nn.BatchNorm2d(128, eps=bn_eps)
        self.act0 = nn.ReLU()
        self.conv = nn.Conv2d(128, 768, self.kernel_size, bias=False)
        self.aux_bn1 = nn.BatchNorm2d(768, eps=bn_eps)
        self.act1 = nn.ReLU()
        self.classifier = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        device = self.proj.weight.device
        self.classifier = (nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = aux_pool_if_fits(self.act(x))
        x = self.act0(self.aux_bn0(self.proj(x)))
        x = self.act1(self.aux_bn1(self.conv(fit_extent(x, self.kernel_size))))
        return self.classifier(x.flatten(1))


def plan_layers(stem: str, plan: Sequence[tuple[str, int, int]]) -> list[tuple[str, tuple[int, ...]]]:
    """The forward plan for :meth:`CellNetwork._set_layers` from a stem module and ``_plan``
    (``(cell name, current input, previous input)`` indices into the outputs so far, 0 being "none"
    and 1 the stem's; a cell without a previous input gets one argument)."""
    return [(stem, (0,))] + [(name, (cur,) if prev == 0 else (cur, prev)) for name, cur, prev in plan]


def _spatial_sizes(img_size: int, stem: str, levels: int) -> list[int]:
    """Spatial size at each resolution level for a square ``img_size`` input."""
    if stem == "imagenet":
        sizes = [img_size, (img_size - 3) // 2 + 1]  # conv0: 3x3, stride 2, VALID
    else:
        sizes = [img_size]
    while len(sizes) <= levels:
        sizes.append(-(-sizes[-1] // 2))
    return sizes


class NASNet(CellNetwork):
    """NASNet-A / AmoebaNet-A / PNASNet-5 (and any ``family="nasnet"`` genotype) the TF-slim way.

    Published configurations (see ``shared/reference``): NASNet-A mobile ``N=4, F=44``; large ``N=6,
    F=168, stem_multiplier=3, skip_reduction_layer_input=True`` (331); CIFAR ``N=6, F=32,
    stem="cifar", stem_multiplier=3``; AmoebaNet-A mobile ``N=4, F=50``; PNASNet-5 mobile ``N=3, F=54,
    reduction="stride", skip_reduction_layer_input=True``; large ``N=4, F=216, stem_multiplier=3``, same.

    ``pool_padding="timm"`` counts the zeros of stride-2 "SAME" average pools as timm's
    ``AvgPool2dSame`` does (to reproduce timm's ``nasnetalarge`` outputs); ``"tf"`` excludes them as TF.
    ``img_size`` only fixes the auxiliary head's last conv (see :class:`AuxHead`).
    """

    first_conv = "conv0.conv"  # the stem conv (timm's cfg key: adapted for other in_chans)

    def __init__(self, genotype: Union[Genotype, dict, str], *, N: int, F: int, stem: str = "imagenet",
                 stem_multiplier: float = 1.0, skip_reduction_layer_input: bool = False,
                 reduction: str = "cell", num_classes: int = 1000, in_chans: int = 3,
                 auxiliary: bool = False, drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 bn_eps: float = 1e-3, filter_scaling_rate: float = 2.0, pool_padding: str = "tf",
                 img_size: Optional[int] = None, num_reduction_layers: int = 2) -> None:
        super().__init__(num_classes, in_chans, drop_rate)
        genotype = Genotype.parse(genotype)
        if genotype.family != "nasnet":
            raise ConfigError(f"NASNet builds 'nasnet'-family genotypes (TF-slim order and ops); "
                              f"{genotype.name or 'this genotype'} is of family {genotype.family!r}.")
        if stem not in ("imagenet", "cifar"):
            raise ConfigError(f"stem={stem!r} is not 'imagenet' or 'cifar'.")
        if reduction not in ("cell", "stride"):
            raise ConfigError(f"reduction={reduction!r} is not 'cell' (NASNet/AmoebaNet reduction cells) "
                              "or 'stride' (PNASNet strided cells).")
        if pool_padding not in ("tf", "timm"):
            raise ConfigError(f"pool_padding={pool_padding!r} is not 'tf' or 'timm'.")
        if int(N) < 1 or int(F) < 1:
            raise ConfigError(f"N={N} and F={F} must be positive integers.")
        self.genotype = genotype
        self.N, self.F = int(N), int(F)
        self.stem_type = stem
        self.reduction = reduction
        rate = float(filter_scaling_rate)
        op_options = dict(bn_eps=bn_eps, avg_pool_count_pad=pool_padding == "timm")
        num_cells = 3 * self.N
        reduction_indices = calc_reduction_layers(num_cells, num_reduction_layers)
        num_stem_cells = 2 if stem == "imagenet" else 0
        total_num_cells = num_cells + num_stem_cells + (len(reduction_indices) if reduction == "cell" else 0)
        self.reduction_indices = reduction_indices
        self.total_num_cells = total_num_cells

        # outputs[i] = (channels, level) of the i-th tensor the forward pass keeps; 0 is "none".
        metas: list[Optional[tuple[int, int]]] = [None]
        self._plan: list[tuple[str, int, int]] = []

        def add_cell(name: str, cell: Cell, cur: int, prev: int, filter_scaling: float, stride: int,
                     cell_num: int) -> None:
            module = TFCell(cell, cur=metas[cur], prev=metas[prev], C=int(self.F * filter_scaling),
                            stride=stride, drop_path_scale=(cell_num + 1) / total_num_cells,
                            op_options=op_options, bn_eps=bn_eps)
            self.add_module(name, module)
            self._plan.append((name, cur, prev))
            metas.append((module.out_channels, module.out_level))

        # ---- stem
        if stem == "imagenet":
            C0 = int(32 * stem_multiplier)
            self.conv0 = ConvBn(in_chans, C0, 3, 2, "valid", bn_eps)
            metas.append((C0, 1))
            filter_scaling = 1.0 / rate ** num_stem_cells
            for i in range(num_stem_cells):
                add_cell(f"cell_stem_{i}", genotype.reduce, len(metas) - 1, len(metas) - 2,
                         filter_scaling, 2, i)
                filter_scaling *= rate
        else:
            C0 = int(self.F * stem_multiplier)
            self.conv0 = ConvBn(in_chans, C0, 3, 1, "same", bn_eps)
            metas.append((C0, 0))

        # ---- cells
        aux_cell = reduction_indices[1] - 1 if len(reduction_indices) >= 2 else None
        self._aux_index: Optional[int] = None
        filter_scaling = 1.0
        true_cell_num = num_stem_cells
        prev = len(metas) - 2
        for cell_num in range(num_cells):
            is_reduction = cell_num in reduction_indices
            if reduction == "cell":
                if skip_reduction_layer_input:
                    prev = len(metas) - 2
                if is_reduction:
                    filter_scaling *= rate
                    add_cell(f"reduction_cell_{reduction_indices.index(cell_num)}", genotype.reduce,
                             len(metas) - 1, len(metas) - 2, filter_scaling, 2, true_cell_num)
                    true_cell_num += 1
                if not skip_reduction_layer_input:
                    prev = len(metas) - 2
                add_cell(f"cell_{cell_num}", genotype.normal, len(metas) - 1, prev, filter_scaling, 1,
                         true_cell_num)
            else:
                if is_reduction:
                    filter_scaling *= rate
                if skip_reduction_layer_input or not is_reduction:
                    prev = len(metas) - 2
                add_cell(f"cell_{cell_num}", genotype.reduce if is_reduction else genotype.normal,
                         len(metas) - 1, prev, filter_scaling, 2 if is_reduction else 1, true_cell_num)
            true_cell_num += 1
            if cell_num == aux_cell:
                self._aux_index = len(metas) - 1

        C_final, _ = metas[-1]
        self._init_head(C_final, pre_act=True)
        if auxiliary and self._aux_index is not None:
            if img_size is None:
                img_size = 224 if stem == "imagenet" else 32
            C_aux, level_aux = metas[self._aux_index]
            h = _spatial_sizes(int(img_size), stem, level_aux)[level_aux]
            kernel = (h - 5) // 3 + 1 if h >= 5 else h
            self.auxiliary_head = AuxHead(C_aux, num_classes, kernel, bn_eps)
        self._set_layers(plan_layers("conv0", self._plan), metas[1:], self._aux_index,
                         stem_steps=1 + num_stem_cells)
        self.drop_path_prob = drop_path_rate


    @property
    def cell_names(self) -> list[str]:
        """The stem and cell modules in forward order."""
        return ["conv0"] + [name for name, _, _ in self._plan]

    def wiring(self) -> dict[str, tuple[str, Optional[str]]]:
        """``{cell: (current input, previous input)}`` by module name (``None``: no previous input)."""
        names = [None] + self.cell_names
        return {name: (names[cur], names[prev]) for name, cur, prev in self._plan}
