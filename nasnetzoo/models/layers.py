"""Small layers shared by the builders."""
from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops a whole branch per sample during training and rescales the survivors.

    ``p`` is set by ``CellNetwork.drop_path_prob`` (DARTS ramps it linearly over the epochs).
    ``scale`` implements NASNet's ScheduledDropPath depth scaling, ``(cell_index + 1) / num_cells``;
    1 for DARTS.  In eval mode, or with ``p == 0``, it is the identity: nothing random in eval.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.p = 0.0
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p * self.scale
        if not self.training or p <= 0.0:
            return x
        keep = 1.0 - p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale:.3f}"
