"""DARTS (Liu et al., ICLR 2019): bilevel optimisation of the continuous relaxation.

The architecture step minimises the held-out loss.  First order treats the weights as fixed;
second order differentiates through one virtual SGD step ``w' = w - eta (m + g + wd w)`` of the
weights, with the mixed second derivative approximated by a central finite difference of
architecture gradients at ``w +/- R v`` (``v = dL_val/dw'``, ``R = 0.01 / |v|``), as in the paper.
PC-DARTS reuses this class (first order) on a supernet with partial channels and edge weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.func import functional_call

from ..supernet import CELL_TYPES, SearchNetwork
from .base import Batch, SearchStrategy, derive_from_weights
from .registry import Strategy, arch_options, register_strategy, supernet_summary


class DARTSStrategy(SearchStrategy):
    name = "darts"

    def __init__(self, network: SearchNetwork, *, arch_lr: float = 3e-4, arch_betas=(0.5, 0.999),
                 arch_weight_decay: float = 1e-3, second_order: bool = False,
                 grad_clip: Optional[float] = 5.0) -> None:
        super().__init__(network, grad_clip=grad_clip)
        self.second_order = second_order
        self.arch_optimizer = torch.optim.Adam(network.arch_parameters(), lr=arch_lr, betas=tuple(arch_betas),
                                               weight_decay=arch_weight_decay)

    # ---------------------------------------------------------------- architecture step
    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        self.arch_optimizer.zero_grad(set_to_none=True)
        if self.second_order:
            val_loss, grads = self.unrolled_arch_grads(train_batch, val_batch, w_optimizer)
            for p, g in zip(self.network.arch_parameters(), grads):
                p.grad = g
        else:
            x, y = val_batch
            val_loss = self.loss(self.forward(x), y)
            arch = self.network.arch_parameters()
            for p, g in zip(arch, torch.autograd.grad(val_loss, arch)):
                p.grad = g
        self.all_reduce_mean([p.grad for p in self.network.arch_parameters()])
        self.arch_optimizer.step()
        return {"arch_loss": val_loss.detach()}   # a tensor: no device sync per step

    def unrolled_arch_grads(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer,
                            r: float = 1e-2) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(L_val(w', alpha), d L_val(w'(alpha), alpha) / d alpha) for the second-order step."""
        net = self.network
        weights = net.weight_parameters()
        arch = net.arch_parameters()
        names = {id(p): n for n, p in net.named_parameters()}
        eta, momentum, wd = _sgd_hyperparameters(w_optimizer)

        # One virtual SGD step of the weights on the train batch (momentum and decay included).
        x, y = train_batch
        grads = torch.autograd.grad(self.loss(self.forward(x), y), weights)
        unrolled = {}
        for p, g in zip(weights, grads):
            buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
            step = g + wd * p.detach() + (momentum * buf if buf is not None else 0)
            unrolled[names[id(p)]] = (p.detach() - eta * step).requires_grad_()
        # Held-out loss at w' (alpha used as the live parameters); buffers are cloned so the
        # virtual model leaves the real BatchNorm statistics alone.
        params = {**unrolled, **{names[id(a)]: a for a in arch}}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        xv, yv = val_batch
        with self.autocast(), net.no_checkpoint():
            val_logits = functional_call(net, {**params, **buffers}, (xv,))
        val_loss = self.loss(val_logits, yv)
        d_arch = torch.autograd.grad(val_loss, arch, retain_graph=True)
        v = torch.autograd.grad(val_loss, [unrolled[names[id(p)]] for p in weights])
        # Mixed second derivative by central differences: (g(w + Rv) - g(w - Rv)) / 2R.
        R = r / torch.cat([t.flatten() for t in v]).norm()
        implicit = self._arch_grad_difference(train_batch, weights, v, R)
        return val_loss.detach(), [d - eta * h for d, h in zip(d_arch, implicit)]

    def _arch_grad_difference(self, batch: Batch, weights, v, R) -> list[torch.Tensor]:
        x, y = batch
        arch = self.network.arch_parameters()
        with torch.no_grad():
            for p, t in zip(weights, v):
                p.add_(R * t)
        g_plus = torch.autograd.grad(self.loss(self.forward(x), y), arch)
        with torch.no_grad():
            for p, t in zip(weights, v):
                p.sub_(2 * R * t)
        g_minus = torch.autograd.grad(self.loss(self.forward(x), y), arch)
        with torch.no_grad():
            for p, t in zip(weights, v):
                p.add_(R * t)
        return [(a - b) / (2 * R) for a, b in zip(g_plus, g_minus)]

    # ---------------------------------------------------------------- results
    def derive(self, **kwargs):
        net = self.network
        return derive_from_weights(net, {t: net.op_weights(t) for t in CELL_TYPES},
                                   {t: net.edge_weights(t) for t in CELL_TYPES}, **kwargs)

    def distribution(self) -> dict:
        net = self.network
        out = {f"alphas_{t}": net.op_weights(t).detach().cpu().tolist() for t in CELL_TYPES}
        if net.edge_norm:
            out.update({f"betas_{t}": net.edge_weights(t).detach().cpu().tolist() for t in CELL_TYPES})
        return out

    def state_dict(self) -> dict:
        return {"arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])


def _sgd_hyperparameters(optimizer: torch.optim.Optimizer) -> tuple[float, float, float]:
    group = optimizer.param_groups[0]
    return float(group["lr"]), float(group.get("momentum", 0.0)), float(group.get("weight_decay", 0.0))


register_strategy(Strategy(
    "darts", title="DARTS", summary=supernet_summary, compiles=True,
    build=lambda recipe, network: DARTSStrategy(network, second_order=recipe.second_order, **arch_options(recipe))))
