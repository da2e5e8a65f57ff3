"""GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019).

Each edge samples one op from a hard Gumbel-softmax of its architecture logits and runs only that
op, so a step holds one path's activations, not the supernet's.  The sample is straight-through:
``h = one_hot(argmax p) - p.detach() + p`` with ``p = softmax((log_softmax(alpha) + g) / tau)`` and
Gumbel noise ``g``; the forward multiplies the sampled op's output by ``h[k] = 1`` and the backward
sends ``dL/dh[k] = <op_k(x), dL/dy>`` through ``p[k]`` alone (:func:`hard_gumbel_softmax`).

Faithful to the official code, D-X-Y/AutoDL-Projects (xautodl 1.0.0 on PyPI), in its DARTS (NASNet)
space: ``xautodl/models/cell_searchs/search_model_gdas_nasnet.py`` (``NASNetworkGDAS``, its
``forward`` and ``genotype``) with the cells of ``search_cells.py`` (``NASNetSearchCell.forward_gdas``),
driven by ``exps/NAS-Bench-201-algos/GDAS.py`` (``search_func``) as
``scripts-search/NASNet-space-search-by-GDAS.sh`` runs it:

* one step: the weights on a train batch first (an SGD step, the gradient norm clipped to 5 over
  *all* parameters: the architecture's gradient counts in the norm, the train loss's added to the
  one the previous architecture step left, as the official ``backward()`` accumulates it), then the
  architecture on a held-out batch (Adam), each forward drawing its own sample;
* tau from ``tau_max`` to ``tau_min`` linearly over the epochs, ``tau_max - (tau_max - tau_min) *
  epoch / (epochs - 1)``, set before each epoch;
* a sample whose noise or probabilities are not finite is drawn again, as the official loop does;
* the supernet: its op order, bare pools (no BatchNorm after them), BatchNorm + ReLU before the
  global pooling (the strategy's entry fixes these: ``primitives``, ``pool_bn``, ``last_act``);
* the genotype: per node, the two strongest (op, input) pairs over all its incoming edges, ``none``
  left out (two ops may read the same input), in the order of their weights.

Departures, deliberate:

* The official convs before a non-affine BatchNorm carry a bias (``bias=not affine``); the supernet's
  do not.  In training mode a per-channel shift before BatchNorm changes nothing (it is subtracted
  with the batch mean, and its gradient is zero); it only enters the running mean, which subtracts it
  again in eval mode.
* Written for PyTorch 1.x, the official ``zero_grad()`` zeroes gradients instead of dropping them, so
  an op that once had a gradient keeps getting SGD's weight decay and momentum when it is not
  sampled.  PyTorch 2's ``zero_grad()`` sets them to None and SGD would skip those ops; this
  strategy keeps the 1.x behaviour (:meth:`GDASStrategy._keep_grads`) and saves which weights have a
  gradient with the checkpoint, so a resumed run steps the same weights.
* The sample comes from the strategy's own generator, seeded alike on every rank, so every process of
  a torchrun job runs the same architecture; the held-out accuracy runs a sampled path too, as the
  official network's forward does in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...genotype import Cell, Edge, Genotype
from ...recipe_file import RecipeError
from ..supernet import CELL_TYPES, SearchNetwork, edge_offset
from .base import Batch, SearchStrategy
from .parsec import generator_on
from .registry import Strategy, arch_options, check_full_channels_first_order, register_strategy, supernet_summary

# xautodl's DARTS_SPACE, in its order: its dua_sepc_KxK are DARTS's sep_conv_KxK (two separable
# convs), its dil_sepc_KxK DARTS's dil_conv_KxK.
GDAS_PRIMITIVES = ("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
                   "avg_pool_3x3", "max_pool_3x3")


def hard_gumbel_softmax(alpha: torch.Tensor, tau: float,
                        generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GDAS's sample of every edge (rows of ``alpha``): ``(hard weights, op index per row)``.

    The hard weights are one-hot in value and carry the gradient of the soft probabilities
    ``softmax((log_softmax(alpha) + g) / tau)``; ``g = -log(Exponential(1))`` is Gumbel noise."""
    while True:
        gumbels = -torch.empty_like(alpha).exponential_(generator=generator).log()
        probs = F.softmax((alpha.log_softmax(dim=1) + gumbels) / tau, dim=1)
        index = probs.max(-1, keepdim=True)[1]
        hard = torch.zeros_like(probs).scatter_(-1, index, 1.0) - probs.detach() + probs
        if bool(torch.isfinite(gumbels).all() & torch.isfinite(probs).all()):   # else drawn again
            return hard, index.squeeze(-1)


def gdas_tau(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """The official schedule: linear from tau_max (first epoch) to tau_min (last)."""
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


class GDASStrategy(SearchStrategy):
    name = "gdas"

    def __init__(self, network: SearchNetwork, *, tau_max: float = 10.0, tau_min: float = 0.1,
                 arch_lr: float = 3e-4, arch_betas=(0.5, 0.999), arch_weight_decay: float = 1e-3,
                 grad_clip: Optional[float] = 5.0, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(network, grad_clip=grad_clip)
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max   # the official network's tau until the first epoch sets it
        self.generator = generator_on(network.alphas_normal.device, generator)
        self.arch_params = network.arch_parameters()
        self.arch_optimizer = torch.optim.Adam(self.arch_params, lr=arch_lr, betas=tuple(arch_betas),
                                               weight_decay=arch_weight_decay)
        self._index: dict = {}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.tau = gdas_tau(epoch, epochs, self.tau_max, self.tau_min)

    # ---------------------------------------------------------------- the sample
    def sample(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{cell_type: (hard weights, op index per edge)}``, the normal cell's drawn first."""
        return {t: hard_gumbel_softmax(getattr(self.network, f"alphas_{t}"), self.tau, self.generator)
                for t in CELL_TYPES}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh sample, one op per edge (the held-out accuracy runs one too)."""
        sample = self.sample()
        self._index = {t: index.tolist() for t, (_, index) in sample.items()}   # one device sync
        with self.autocast():
            return self.network.forward_sampled(x, {t: hard for t, (hard, _) in sample.items()}, self._index)

    # ---------------------------------------------------------------- one step: weights, then architecture
    def step(self, train_batch: Batch, val_batch: Optional[Batch],
             optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        if val_batch is None:   # a warm-up step (the official has none): no architecture gradient carried
            self.arch_optimizer.zero_grad(set_to_none=True)
        loss, logits = self.weight_step(train_batch, optimizer)
        if val_batch is not None:
            self.arch_step(train_batch, val_batch, optimizer)
        return loss, logits

    def weight_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        optimizer.zero_grad(set_to_none=False)   # PyTorch 1.x's zero_grad (see _keep_grads)
        logits = self.forward(x)
        loss = self.loss(logits, y)
        loss.backward()
        # The official clips over network.parameters(): the architecture's gradient (the last
        # architecture step's plus this loss's, discarded by the next architecture step) counts in
        # the norm.  (The carried part was averaged over the ranks already, so averaging again keeps it.)
        params = [p for p in self.weight_params + self.arch_params if p.grad is not None]
        self.all_reduce_mean([p.grad for p in params])
        if self.grad_clip:
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()
        return loss.detach(), logits.detach()

    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        x, y = val_batch
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.forward(x), y)
        for p, g in zip(self.arch_params, torch.autograd.grad(loss, self.arch_params)):
            p.grad = g
        self.all_reduce_mean([p.grad for p in self.arch_params])
        self.arch_optimizer.step()
        self._keep_grads(self._index)
        return {"arch_loss": loss.detach()}

    def _keep_grads(self, index: dict) -> None:
        """The weights of the ops this sample ran get a (zero) gradient where they have none.

        The official ``arch_loss.backward()`` gives them one, which its next ``zero_grad()`` zeroes
        but (PyTorch 1.x) keeps, so from then on SGD decays them and moves them by their momentum
        in every step, sampled or not.  Gradients of the weights themselves are not needed here."""
        for cell in self.network.cells:
            ops = index["reduce" if cell.reduction else "normal"]
            for edge, k in zip(cell.edges, ops):
                for p in edge.ops[k].parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)

    # ---------------------------------------------------------------- results
    def derive(self, *, name: str = "", provenance: Optional[dict] = None) -> Genotype:
        """The official ``genotype()``: per node the two strongest (op, input) pairs, ``none`` left out."""
        net = self.network
        prims = net.primitives
        concat = tuple(range(2 + net.steps - net.cells[0].multiplier, 2 + net.steps))
        cells = {}
        for t in CELL_TYPES:
            W = net.op_weights(t).detach().cpu().tolist()
            nodes = []
            for i in range(net.steps):
                pairs = [(W[edge_offset(i) + j][k], j, k) for j in range(2 + i)
                         for k in range(len(prims)) if prims[k] != "none"]
                top = sorted(pairs, key=lambda pair: -pair[0])[:2]   # stable: ties keep the official order
                nodes.append(tuple(Edge(prims[k], j) for _, j, k in top))
            cells[t] = Cell(tuple(nodes), concat)
        return Genotype(cells["normal"], cells["reduce"], "darts", name, provenance or {})

    def distribution(self) -> dict:
        net = self.network
        out = {f"alphas_{t}": net.op_weights(t).detach().cpu().tolist() for t in CELL_TYPES}
        out["tau"] = self.tau
        return out

    def state_dict(self) -> dict:
        state = {"arch_optimizer": self.arch_optimizer.state_dict(),
                 "with_grad": [i for i, p in enumerate(self.weight_params) if p.grad is not None],
                 # carried into the next weight step's clipping norm
                 "arch_grads": [None if p.grad is None else p.grad.detach().clone() for p in self.arch_params]}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        for i in state.get("with_grad", ()):
            p = self.weight_params[i]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for p, g in zip(self.arch_params, state.get("arch_grads", ())):
            p.grad = None if g is None else g.to(p.device, p.dtype).clone()
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"].cpu())


@dataclass
class GDASOptions:
    """GDAS's own recipe keys (``options:`` with ``strategy: gdas``)."""
    tau_max: float = 10.0   # the Gumbel-softmax temperature of the first epoch (--tau_max)
    tau_min: float = 0.1    # ... and of the last (--tau_min)

    def __post_init__(self) -> None:
        if not 0.0 < self.tau_min <= self.tau_max:
            raise RecipeError(f"recipe keys 'options.tau_min' = {self.tau_min} and 'options.tau_max' = "
                              f"{self.tau_max}: GDAS needs 0 < tau_min <= tau_max (the official 0.1 and 10).")


def _check(recipe) -> None:
    check_full_channels_first_order(recipe, "gdas", "runs one op per edge")


def _build(recipe, network: SearchNetwork) -> GDASStrategy:
    options = recipe.strategy_options()
    # Its own generator, seeded alike on every rank: every process samples the same architecture.
    generator = torch.Generator(device="cpu").manual_seed(recipe.seed)
    return GDASStrategy(network, tau_max=options.tau_max, tau_min=options.tau_min, generator=generator,
                        **arch_options(recipe))


register_strategy(Strategy(
    "gdas", title="GDAS", summary=supernet_summary, build=_build, options=GDASOptions, check=_check,
    network={"primitives": GDAS_PRIMITIVES, "pool_bn": None, "last_act": True}))
