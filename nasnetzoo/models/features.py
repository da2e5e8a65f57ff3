"""``load(name, features_only=True)``: a network cut after its last wanted feature map.

The same contract as timm's ``features_only`` models (``FeatureGetterNet``): ``forward`` returns
the list of maps of ``out_indices`` (indices into the network's ``feature_info``), and
``feature_info`` describes just those.  The cells after the last one are pruned, and so is the head.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .base import CellNetwork, FeatureInfo, Indices


class FeatureExtractor(nn.Module):
    """Wraps a :class:`CellNetwork`: ``forward(x)`` -> ``[map for each of out_indices]``."""

    def __init__(self, model: CellNetwork, out_indices: Indices = None) -> None:
        super().__init__()
        training = model.training
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_head=True)
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)
        self.model = model
        self.train(training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)


def features_only(model: nn.Module, out_indices: Union[None, int, Sequence[int]] = None) -> FeatureExtractor:
    """``model`` as a feature extractor (its cells after the last wanted map are removed)."""
    if not isinstance(model, CellNetwork):
        from ..errors import ConfigError

        raise ConfigError(f"features_only=True needs a zoo network; got {type(model).__name__}.")
    return FeatureExtractor(model, out_indices)
