"""What every zoo network shares: the timm-style interface, the head, and drop-path control.

Subclasses build their stem and cells, then call :meth:`CellNetwork._set_layers` with the forward
plan: one ``(module name, input indices)`` step per stem part or cell, where index 0 is the input
image and index ``i`` the output of step ``i``.  The base class runs the plan (so ``forward``,
``forward_intermediates``, gradient checkpointing and pruning are written once), owns the
classifier, the auxiliary head and ``forward``.

``forward`` returns logits.  In training mode with the auxiliary head enabled it returns
``(logits, aux_logits)``; in eval mode it never computes the auxiliary head, and nothing is random.

Feature maps (timm's definitions, ``timm/models/_features.py``): ``feature_info`` lists, for each
stride the network reaches, the last step output at that stride (the stem part or cell output
before the next reduction), with its channels (``num_chs``), nominal ``reduction`` and ``module``
(the step's module name, so forward hooks on it see the same tensor).  These are the raw outputs:
the next cell applies its own ReLU.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.fx import Proxy
from torch.utils.checkpoint import checkpoint

from .layers import DropPath

Indices = Optional[Union[int, Sequence[int]]]
GLOBAL_POOLS = ("avg", "max", "")


def take_indices(num_features: int, indices: Indices) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: ``None`` all, an int the last n, a sequence those (negative
    from the end).  Returns the absolute indices and the largest."""
    from ..errors import ConfigError

    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ConfigError(f"indices={indices} (the last n feature maps) is out of range: this network "
                              f"has {num_features} (1 to {num_features}).")
        taken = list(range(num_features - indices, num_features))
    else:
        taken = []
        for i in indices:
            absolute = num_features + i if i < 0 else i
            if not 0 <= absolute < num_features:
                raise ConfigError(f"feature index {i} is out of range: this network has {num_features} "
                                  f"feature maps (indices 0 to {num_features - 1}, or negative from the end).")
            taken.append(absolute)
    return taken, max(taken)


def set_num_classes(model: nn.Module, num_classes: int) -> None:
    """After ``reset_classifier``: the cfg says the head's new class count (0: no head)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        cfg["num_classes"] = int(num_classes)
        config = cfg.get("config")
        if isinstance(config, dict) and "num_classes" in config:
            config["num_classes"] = int(num_classes)
        cfg.setdefault("cfg_sources", {})["num_classes"] = "reset_classifier"


class FeatureInfo(list):
    """``feature_info``: a list of ``dict(num_chs, reduction, module, index)`` with timm's getters."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class CellNetwork(nn.Module):
    """Base class: ``forward_features``, ``forward_head``, ``reset_classifier``, features, drop path."""

    num_features: int  # channels of the feature map that ``forward_features`` returns
    first_conv: str  # module name of the stem conv (timm's cfg key)

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.auxiliary_head: Optional[nn.Module] = None
        self.genotype = None  # set by builders; kept so a model can be saved with its cell
        self.grad_checkpointing = False

    # ---------------------------------------------------------------- the forward plan
    def _set_layers(self, layers: Sequence[tuple[str, tuple[int, ...]]], metas: Sequence[tuple[int, int]],
                    aux_index: Optional[int], stem_steps: int) -> None:
        """Record the forward plan: ``layers[i]`` produces output ``i + 1`` with ``metas[i] =
        (channels, level)`` (``level``: resolution halvings, so ``reduction = 2 ** level``);
        ``aux_index`` is the output the auxiliary head reads; the first ``stem_steps`` are the stem."""
        self._layers = [(name, tuple(inputs)) for name, inputs in layers]
        self._aux_index = aux_index
        self._stem_steps = stem_steps
        last_at_level: dict[int, int] = {}
        for i, (_, level) in enumerate(metas):
            last_at_level[level] = i
        self.feature_info = FeatureInfo(
            dict(num_chs=int(metas[i][0]), reduction=2 ** level, module=self._layers[i][0], index=i + 1)
            for level, i in sorted(last_at_level.items()))

    def _run_layer(self, i: int, outs: list) -> torch.Tensor:
        name, inputs = self._layers[i]
        module = self.get_submodule(name)
        args = [outs[j] for j in inputs]
        if self.grad_checkpointing and torch.is_grad_enabled() and not isinstance(args[0], Proxy):
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _forward_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        outs = [x]
        for i in range(len(self._layers)):
            outs.append(self._run_layer(i, outs))
        use_aux = self.training and self.auxiliary_head is not None and self._aux_index is not None
        return outs[-1], (outs[self._aux_index] if use_aux else None)

    # ---------------------------------------------------------------- head
    def _init_head(self, num_features: int, pre_act: bool = False) -> None:
        """Global average pooling + dropout + linear; ``pre_act`` adds TF's ReLU before pooling."""
        self.num_features = self.head_hidden_size = num_features
        self.head_act = nn.ReLU() if pre_act else nn.Identity()
        self._set_global_pool("avg")
        self.head_drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.classifier = self._make_classifier(num_features, self.num_classes)

    def _set_global_pool(self, global_pool: str) -> None:
        from ..errors import ConfigError

        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"global_pool={global_pool!r} is not one of {GLOBAL_POOLS} ('' keeps the map).")
        if global_pool == "" and self.num_classes > 0:
            raise ConfigError("global_pool='' (no pooling) needs num_classes=0: a linear classifier "
                              "takes pooled features.")
        self.global_pool_type = global_pool
        self.global_pool = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1),
                            "": nn.Identity()}[global_pool]

    @staticmethod
    def _make_classifier(num_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (0 removes it: ``forward`` then returns pooled features);
        ``global_pool``: ``'avg'``, ``'max'`` or ``''`` (no pooling, with ``num_classes=0``)."""
        self.num_classes = num_classes
        self._set_global_pool(self.global_pool_type if global_pool is None else global_pool)
        set_num_classes(self, num_classes)  # the pretrained cfg says the new head's class count
        device = next(self.parameters()).device
        self.classifier = self._make_classifier(self.num_features, num_classes).to(device)
        if self.auxiliary_head is not None and hasattr(self.auxiliary_head, "reset_classifier"):
            self.auxiliary_head.reset_classifier(num_classes)

    # ---------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's feature map, ``(B, num_features, h, w)``."""
        return self._forward_cells(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.head_act(x))
        if self.global_pool_type:
            x = x.flatten(1)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        self._check_input(x)
        features, aux_input = self._forward_cells(x)
        logits = self.forward_head(features)
        if aux_input is not None:
            return logits, self.auxiliary_head(aux_input)
        return logits

    def _check_input(self, x: torch.Tensor) -> None:
        if isinstance(x, Proxy):  # torch.fx is tracing: the shape is not known yet
            return
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            from ..errors import ConfigError

            raise ConfigError(f"expected an image batch of shape (B, {self.in_chans}, H, W), got "
                              f"{tuple(x.shape)}; build the model with in_chans={x.shape[1] if x.dim() == 4 else '?'} "
                              "for other channel counts.")

    # ---------------------------------------------------------------- multi-scale features
    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """timm's ``forward_intermediates``: the feature maps of ``feature_info[indices]``.

        ``indices``: ``None`` all, an int the last n, a sequence those.  ``norm``: accepted for
        timm's callers; these networks have no final norm.  ``stop_early``: run no cell after the
        last map asked for (the returned final features are then that map).  ``output_fmt``:
        ``'NCHW'`` or ``'NHWC'``.  Returns ``(final features, maps)``, or only the maps.
        """
        from ..errors import ConfigError

        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigError(f"output_fmt={output_fmt!r} is not 'NCHW' or 'NHWC'.")
        self._check_input(x)
        taken, last = take_indices(len(self.feature_info), indices)
        wanted = {self.feature_info[i]["index"]: i for i in taken}
        steps = self.feature_info[last]["index"] if stop_early or intermediates_only else len(self._layers)
        outs = [x]
        maps: list[torch.Tensor] = []
        for i in range(steps):
            outs.append(self._run_layer(i, outs))
            if i + 1 in wanted:
                maps.append(outs[-1] if output_fmt == "NCHW" else outs[-1].permute(0, 2, 3, 1))
        if intermediates_only:
            return maps
        return outs[-1], maps

    def prune_intermediate_layers(self, indices: Indices = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop the cells after the last map in ``indices``
        (and the head when ``prune_head``, or when cells were dropped).  Returns the absolute indices."""
        taken, last = take_indices(len(self.feature_info), indices)
        keep = self.feature_info[last]["index"]
        for name, _ in self._layers[keep:]:
            parent, _, child = name.rpartition(".")
            delattr(self.get_submodule(parent), child)
        pruned_end = keep < len(self._layers)
        self._layers = self._layers[:keep]
        if self._aux_index is not None and self._aux_index > keep:
            self.auxiliary_head, self._aux_index = None, None
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
            self.feature_info = FeatureInfo(self.feature_info[:last + 1])
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
        return taken

    # ---------------------------------------------------------------- timm's training hooks
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Run each stem part and cell under ``torch.utils.checkpoint`` (recomputed in backward).

        BatchNorm's running statistics are updated again in the recomputation (as in every
        checkpointed BN network); drop-path masks are the same (the RNG state is replayed)."""
        self.grad_checkpointing = bool(enable)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups: the stem, then one group per cell in forward order (the head and
        the auxiliary head last).  Used by timm's layer decay (``param_groups_layer_decay``)."""
        stem = [name for name, _ in self._layers[:self._stem_steps]]
        cells = [name for name, _ in self._layers[self._stem_steps:]]
        return dict(stem=r"^(?:" + "|".join(re.escape(n) for n in stem) + r")\.",
                    blocks=[(rf"^{re.escape(name)}\.", (i,)) for i, name in enumerate(cells)])

    def no_weight_decay(self) -> set[str]:
        """Parameters to keep out of weight decay beyond timm's own rule (1-d tensors: BN, biases):
        none, these networks have no embeddings or scale parameters."""
        return set()

    # ---------------------------------------------------------------- drop path
    @property
    def drop_path_prob(self) -> float:
        """The current (unscaled) drop-path probability; training code ramps it per epoch."""
        return getattr(self, "_drop_path_prob", 0.0)

    @drop_path_prob.setter
    def drop_path_prob(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            from ..errors import ConfigError

            raise ConfigError(f"drop_path_prob={p} is not in [0, 1).")
        self._drop_path_prob = float(p)
        for module in self.modules():
            if isinstance(module, DropPath):
                module.p = float(p)

    @property
    def has_auxiliary(self) -> bool:
        return self.auxiliary_head is not None
