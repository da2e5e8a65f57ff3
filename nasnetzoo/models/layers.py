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
        self.scale = scale
        # The probability lives twice: a Python float for eager mode (no device sync, the same
        # random stream as always) and a 0-d buffer that a compiled graph reads as an input, so a
        # schedule that changes it every epoch or step does not recompile (a float would be
        # guarded on its value). Not persistent: state dicts are unchanged.
        self.register_buffer("prob", torch.zeros(()), persistent=False)
        self.p = 0.0

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = float(value)
        self.active = self._p * self.scale > 0.0   # changes once, from 0 to > 0: at most one recompile
        with torch.no_grad():
            self.prob.fill_(self._p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.active:
            return x
        if torch.compiler.is_compiling():
            keep = 1.0 - self.prob * self.scale
        else:
            keep = 1.0 - self._p * self.scale
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale:.3f}"
