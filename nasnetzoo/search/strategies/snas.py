"""SNAS (Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search", ICLR 2019).

Each edge mixes its ops with a relaxed one-hot sample ``Z = softmax((alpha + g) / t)`` (Gumbel noise
``g = -log(-log U)``, temperature ``t``) instead of DARTS's softmax(alpha), so the search optimises the
expected loss of sampled architectures; a resource penalty on the same sample pushes towards cheap
ops (:mod:`.snas_resources`).  Weights and architecture take their step from one loss, on one batch.

Faithful to the official code, SNAS-Series/SNAS-Series ``SNAS/`` (``model_search.py``: ``Network``,
``_get_categ_mask``, the resource terms of ``forward``, ``genotype_edge_all``; ``train_search.py``:
``train``, ``Temp_Scheduler`` of ``utils.py``), as its README's single-GPU command runs it
(``--snas --temp 1 --temp_min 0.03 --temp_annealing --resource_efficient --resource_lambda 1.5e-3
--log_penalty --drop_path_prob 0.3 --method reparametrization --loss``):

* per step, one sample per cell type (every cell of a type shares it), drawn from ``log_alpha``
  (initialised ``N(1, 0.01)``); the loss ``CE + resource_lambda * penalty``; one backward; the
  weights' gradient clipped to norm 5 (``grad_clip``), the architecture's to 10 (``arch_grad_clip``);
  an SGD step of each, the architecture's plain SGD (no momentum or decay: the official
  single-GPU optimizer; ``arch_optimizer: adam`` is its ``--distributed`` one, Adam (0.5, 0.999)
  with ``arch_weight_decay``);
* drop path on every edge's output while training (``drop_path_prob``, 0.3);
* the temperature, set before each epoch, ``t_min + (t0 - t_min) (1 - (epoch + 1) / epochs)``;
* the held-out accuracy runs a relaxed sample too, as the official ``infer`` does.

Departures, deliberate:

* The official schedule divides by 150 whatever ``--epochs`` is (its default); here by ``epochs``,
  the same at the paper's 150.
* The official trains on the whole CIFAR-10 training set and reports the test set's accuracy; the
  supernet pipeline splits the training set (``train_portion``): the weights and architecture learn
  from the first part, the held-out accuracy comes from the second, and the test set is never seen.
* The sample comes from the strategy's own generator, seeded alike on every rank (the official's
  ``--distributed`` seeds each rank differently), so every process of a torchrun job mixes alike.
* The genotype: the official ``genotype_edge_all`` keeps every edge with its most likely op, ``none``
  meaning no edge (SNAS_mild_edge_all).  A genotype file has two edges per node: a node's edges whose
  most likely op is not ``none``, the most likely first, up to two; fewer than two are made up with
  ``none`` edges (the same network); beyond two, the weakest are left out (not the same network).
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
from .registry import Strategy, check_full_channels_first_order, register_strategy, supernet_summary
from .snas_resources import SEPARATIONS, cost_tables, resource_penalty

ARCH_OPTIMIZERS = ("sgd", "adam")
LOC_MEAN, LOC_STD = 1.0, 0.01   # the official initialisation of log_alpha (--loc_mean, --loc_std)


def relaxed_gumbel_softmax(log_alpha: torch.Tensor, temperature: float,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SNAS's relaxed sample of every edge (rows): ``softmax((log_alpha - log(-log U)) / t)``."""
    u = torch.empty_like(log_alpha).uniform_(generator=generator)
    return F.softmax((log_alpha + (-((-(u.log())).log()))) / temperature, dim=-1)


def snas_temperature(epoch: int, epochs: int, temp: float, temp_min: float) -> float:
    """The official ``Temp_Scheduler`` at (0-based) ``epoch``: linear, reaching temp_min at the last."""
    return max(temp_min, (1 - (epoch + 1) / max(epochs, 1)) * (temp - temp_min) + temp_min)


class SNASStrategy(SearchStrategy):
    name = "snas"

    def __init__(self, network: SearchNetwork, *, temp: float = 1.0, temp_min: float = 0.03,
                 temp_annealing: bool = True, resource_lambda: float = 1.5e-3, log_penalty: bool = True,
                 separation: str = "all", drop_path_prob: float = 0.3, arch_lr: float = 3e-4,
                 arch_optimizer: str = "sgd", arch_betas=(0.5, 0.999), arch_weight_decay: float = 1e-3,
                 arch_grad_clip: Optional[float] = 10.0, grad_clip: Optional[float] = 5.0,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__(network, grad_clip=grad_clip)
        self.temp, self.temp_min, self.temp_annealing = float(temp), float(temp_min), temp_annealing
        self.temperature = self.temp
        self.resource_lambda, self.log_penalty, self.separation = resource_lambda, log_penalty, separation
        self.arch_grad_clip = arch_grad_clip
        self.generator = generator_on(network.alphas_normal.device, generator)
        self.arch_params = network.arch_parameters()
        with torch.no_grad():
            for p in self.arch_params:
                p.normal_(LOC_MEAN, LOC_STD, generator=self.generator)
        if arch_optimizer == "sgd":
            self.arch_optimizer = torch.optim.SGD(self.arch_params, lr=arch_lr)
        else:
            self.arch_optimizer = torch.optim.Adam(self.arch_params, lr=arch_lr, betas=tuple(arch_betas),
                                                   weight_decay=arch_weight_decay)
        network.drop_path_prob = drop_path_prob
        self._tables: dict = {}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if self.temp_annealing:
            self.temperature = snas_temperature(epoch, epochs, self.temp, self.temp_min)

    # ---------------------------------------------------------------- the sample and its cost
    def sample(self) -> dict[str, torch.Tensor]:
        """``{cell_type: Z}``, the relaxed one-hot sample of every edge (edges x ops), normal first."""
        return {t: relaxed_gumbel_softmax(getattr(self.network, f"alphas_{t}"), self.temperature, self.generator)
                for t in CELL_TYPES}

    def tables(self, x: torch.Tensor) -> list:
        """The per-cell cost tables for inputs shaped like ``x`` (worked out once per height)."""
        key = (x.shape[-2], x.device)
        if key not in self._tables:
            self._tables[key] = cost_tables(self.network, x.shape[-2], device=x.device,
                                            dtype=self.network.alphas_normal.dtype)
        return self._tables[key]

    def penalty(self, weights: dict, x: torch.Tensor) -> torch.Tensor:
        return resource_penalty(self.tables(x), weights, log=self.log_penalty, separation=self.separation)

    def forward(self, x: torch.Tensor, weights: Optional[dict] = None) -> torch.Tensor:
        weights = self.sample() if weights is None else weights
        with self.autocast():
            return self.network(x, op_weights=weights)

    # ---------------------------------------------------------------- one step: both from one loss
    def step(self, train_batch: Batch, val_batch: Optional[Batch],
             optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and (after the warm-up: ``val_batch`` given, though unused) the architecture
        from one loss on ``train_batch``; returns the cross-entropy and the logits."""
        loss, error, logits = self.losses(train_batch)
        update_arch = val_batch is not None
        optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weight_params + (self.arch_params if update_arch else []))
        self.all_reduce_mean([p.grad for p in self.weight_params if p.grad is not None])
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.weight_params, self.grad_clip)
        if update_arch:
            self.all_reduce_mean([p.grad for p in self.arch_params])
            if self.arch_grad_clip:
                nn.utils.clip_grad_norm_(self.arch_params, self.arch_grad_clip)
        optimizer.step()
        if update_arch:
            self.arch_optimizer.step()
        return error.detach(), logits.detach()

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the step's loss, its cross-entropy, the logits) on one fresh sample."""
        x, y = batch
        weights = self.sample()
        logits = self.forward(x, weights)
        error = self.loss(logits, y)
        loss = error + self.resource_lambda * self.penalty(weights, x) if self.resource_lambda else error
        return loss, error, logits

    def weight_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(batch, None, optimizer)

    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        raise NotImplementedError("SNAS updates weights and architecture in one step: call step().")

    # ---------------------------------------------------------------- results
    def derive(self, *, name: str = "", provenance: Optional[dict] = None) -> Genotype:
        """Every edge's most likely op (``genotype_edge_all``), written with two edges per node."""
        net = self.network
        prims = net.primitives
        none = prims.index("none") if "none" in prims else None
        concat = tuple(range(2 + net.steps - net.cells[0].multiplier, 2 + net.steps))
        cells = {}
        for t in CELL_TYPES:
            W = net.op_weights(t).detach().cpu()
            nodes = []
            for i in range(net.steps):
                edges = []
                for j in range(2 + i):
                    w, k = W[edge_offset(i) + j].max(-1)
                    edges.append((int(k) == none, -float(w), j, int(k)))   # real edges first, then by weight
                kept = sorted(edges)[:2]
                nodes.append(tuple(Edge(prims[k], j) for _, _, j, k in sorted(kept, key=lambda e: e[2])))
            cells[t] = Cell(tuple(nodes), concat)
        return Genotype(cells["normal"], cells["reduce"], "darts", name, provenance or {})

    def distribution(self) -> dict:
        net = self.network
        out = {f"alphas_{t}": net.op_weights(t).detach().cpu().tolist() for t in CELL_TYPES}
        out["temperature"] = self.temperature
        return out

    def state_dict(self) -> dict:
        state = {"arch_optimizer": self.arch_optimizer.state_dict()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"].cpu())


@dataclass
class SNASOptions:
    """SNAS's own recipe keys (``options:`` with ``strategy: snas``), named as the official flags."""
    temp: float = 1.0               # the initial temperature (--temp)
    temp_min: float = 0.03          # the last epoch's (--temp_min)
    temp_annealing: bool = True     # anneal it linearly over the epochs (--temp_annealing)
    resource_lambda: float = 1.5e-3  # the penalty's weight in the loss (--resource_lambda; 0: no penalty)
    log_penalty: bool = True        # the log of each resource (--log_penalty), else the linear mix
    separation: str = "all"         # which resources: all | size | flops | mac (--separation)
    drop_path_prob: float = 0.3     # drop path on every edge while searching (--drop_path_prob)
    arch_grad_clip: float = 10.0    # the architecture gradient's norm clip (the official's constant; 0: none)
    arch_optimizer: str = "sgd"     # sgd (the official single-GPU optimizer) | adam (its --distributed one)

    def __post_init__(self) -> None:
        if not 0.0 < self.temp_min <= self.temp:
            raise RecipeError(f"recipe keys 'options.temp_min' = {self.temp_min} and 'options.temp' = {self.temp}: "
                              "SNAS needs 0 < temp_min <= temp (the official 0.03 and 1).")
        if self.resource_lambda < 0:
            raise RecipeError(f"recipe key 'options.resource_lambda' = {self.resource_lambda} must be at least 0 "
                              "(0: no resource penalty).")
        if self.separation not in SEPARATIONS:
            raise RecipeError(f"recipe key 'options.separation' = {self.separation!r} is not one of "
                              f"{', '.join(SEPARATIONS)}.")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise RecipeError(f"recipe key 'options.drop_path_prob' = {self.drop_path_prob} must be in [0, 1).")
        if self.arch_grad_clip < 0:
            raise RecipeError(f"recipe key 'options.arch_grad_clip' = {self.arch_grad_clip} must be at least 0 "
                              "(0: no clipping).")
        if self.arch_optimizer not in ARCH_OPTIMIZERS:
            raise RecipeError(f"recipe key 'options.arch_optimizer' = {self.arch_optimizer!r} is not one of "
                              f"{', '.join(ARCH_OPTIMIZERS)}.")


def _check(recipe) -> None:
    check_full_channels_first_order(recipe, "snas", "mixes every op")


def _build(recipe, network: SearchNetwork) -> SNASStrategy:
    o = recipe.strategy_options()
    # Its own generator, seeded alike on every rank: every process draws the same sample.
    generator = torch.Generator(device="cpu").manual_seed(recipe.seed)
    return SNASStrategy(network, temp=o.temp, temp_min=o.temp_min, temp_annealing=o.temp_annealing,
                        resource_lambda=o.resource_lambda, log_penalty=o.log_penalty, separation=o.separation,
                        drop_path_prob=o.drop_path_prob, arch_lr=recipe.arch_lr, arch_optimizer=o.arch_optimizer,
                        arch_betas=recipe.arch_betas, arch_weight_decay=recipe.arch_weight_decay,
                        arch_grad_clip=o.arch_grad_clip or None, grad_clip=recipe.grad_clip or None,
                        generator=generator)


register_strategy(Strategy("snas", title="SNAS", summary=supernet_summary, build=_build, options=SNASOptions,
                           check=_check))
