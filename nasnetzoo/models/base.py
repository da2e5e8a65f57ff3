"""What every zoo network shares: the timm-style interface, the head, and drop-path control.

Subclasses build ``self.stem``/cells and implement ``_forward_cells(x) -> (features, aux_input)``;
the base class owns the classifier, the auxiliary head and ``forward``.

``forward`` returns logits.  In training mode with the auxiliary head enabled it returns
``(logits, aux_logits)``; in eval mode it never computes the auxiliary head, and nothing is random.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ..weights.cfg import set_num_classes
from .layers import DropPath


class CellNetwork(nn.Module):
    """Base class: ``forward_features``, ``forward_head``, ``reset_classifier``, drop path, aux head."""

    num_features: int  # channels of the feature map that ``forward_features`` returns

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.auxiliary_head: Optional[nn.Module] = None
        self.genotype = None  # set by builders; kept so a model can be saved with its cell

    # ---------------------------------------------------------------- head
    def _init_head(self, num_features: int, pre_act: bool = False) -> None:
        """Global average pooling + dropout + linear; ``pre_act`` adds TF's ReLU before pooling."""
        self.num_features = num_features
        self.head_act = nn.ReLU() if pre_act else nn.Identity()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.classifier = self._make_classifier(num_features, self.num_classes)

    @staticmethod
    def _make_classifier(num_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (0 removes it: ``forward`` then returns pooled features)."""
        self.num_classes = num_classes
        set_num_classes(self, num_classes)  # the pretrained cfg says the new head's class count
        device = next(self.parameters()).device
        self.classifier = self._make_classifier(self.num_features, num_classes).to(device)
        if self.auxiliary_head is not None and hasattr(self.auxiliary_head, "reset_classifier"):
            self.auxiliary_head.reset_classifier(num_classes)

    # ---------------------------------------------------------------- forward
    def _forward_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's feature map, ``(B, num_features, h, w)``."""
        return self._forward_cells(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.head_act(x)).flatten(1)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            from ..errors import ConfigError

            raise ConfigError(f"expected an image batch of shape (B, {self.in_chans}, H, W), got "
                              f"{tuple(x.shape)}; build the model with in_chans={x.shape[1] if x.dim() == 4 else '?'} "
                              "for other channel counts.")
        features, aux_input = self._forward_cells(x)
        logits = self.forward_head(features)
        if self.training and self.auxiliary_head is not None and aux_input is not None:
            return logits, self.auxiliary_head(aux_input)
        return logits

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
