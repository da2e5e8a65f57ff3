"""The interface every search strategy implements, and the genotype derivations they share.

A search loop calls ``strategy.start_epoch(epoch, epochs)`` before each epoch, then per batch
pair (a train batch and a held-out batch)::

    loss, logits = strategy.step(train_batch, val_batch, w_optimizer)   # val_batch None during warm-up

which by default is DARTS's order::

    strategy.arch_step(train_batch, val_batch, w_optimizer)   # skipped during warm-up
    loss, logits = strategy.weight_step(train_batch, w_optimizer)

(GDAS updates the weights first, SNAS both from one batch: they override ``step``), and, at the end
of an epoch, ``strategy.derive()`` for the current genotype and ``strategy.distribution()`` for
what gets logged (alphas/betas or pi, as plain lists).

A strategy that changes the network between epochs (P-DARTS's stages: deeper, fewer ops per edge)
answers ``strategy.network_change(epoch, epochs)``, asked before every epoch but the first, with a
:class:`NetworkChange`; the runner then builds that supernet, this strategy's successor on it
(the strategy's entry ``build``), a fresh weight optimizer and a fresh learning-rate schedule, and
saves the change's options with every checkpoint so that a resumed run rebuilds the same network.
The network of the first epoch is the entry's ``first_network(recipe)`` (None: the recipe's).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...genotype import Cell, Edge, Genotype
from ...runs.distributed import all_reduce_mean
from ..supernet import CELL_TYPES, SearchNetwork, edge_offset

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class NetworkChange:
    """The supernet a strategy asks for from an epoch on.  ``options``: SearchNetwork keywords over
    the recipe's (``layers``, ``C``, ``edge_ops``, ...; plain values: they are saved with the
    checkpoint); ``epochs``: how many epochs the restarted learning-rate schedule spans (0: the run's)."""
    options: dict = field(default_factory=dict)
    epochs: int = 0


class SearchStrategy:
    name = "base"

    def __init__(self, network: SearchNetwork, *, grad_clip: Optional[float] = 5.0) -> None:
        self.network = network
        self.grad_clip = grad_clip
        # The runner swaps in bf16 autocast on a GPU; losses are always computed in fp32.
        self.autocast: Callable[[], Any] = contextlib.nullcontext
        # Listed once: walking the supernet's modules for them takes ~7 ms, twice a step.  The
        # weight optimizer holds the same fixed list.
        self.weight_params = network.weight_parameters()
        # The torch.compile wrapper of the network (recipe key compile; the module's state, and so the
        # checkpoints, stay the module's); None: the forward runs ``self.network`` itself.
        self.compiled_forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    # ---------------------------------------------------------------- steps
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast output: the loss in fp32
            logits = logits.float()
        return F.cross_entropy(logits, target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward = self.network if self.compiled_forward is None else self.compiled_forward
        with self.autocast():
            return forward(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of what the search currently believes in (for the held-out accuracy)."""
        return self.forward(x)

    def weight_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of the network weights on ``batch``; returns (loss, logits) detached."""
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        logits = self.forward(x)
        loss = self.loss(logits, y)
        # Gradients of the weights only: the architecture parameters' would be thrown away (the
        # architecture step zeroes them first), and skipping them spares a reduction per BatchNorm.
        loss.backward(inputs=self.weight_params)
        self._clip_and_step(optimizer)
        return loss.detach(), logits.detach()

    def _clip_and_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = self.weight_params
        self.all_reduce_mean([p.grad for p in params if p.grad is not None])
        if self.grad_clip:
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()

    @staticmethod
    def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> None:
        """Average gradients over the processes of a torchrun job, so that weights and architecture
        parameters take the same step, and stay identical, on every rank: packed into ~25 MiB flat
        buckets, a handful of messages a step rather than one per tensor."""
        all_reduce_mean(tensors)

    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        raise NotImplementedError

    def step(self, train_batch: Batch, val_batch: Optional[Batch],
             optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step: the architecture on ``val_batch`` (None: a warm-up step, weights only),
        then the weights on ``train_batch``; returns the weight step's (loss, logits)."""
        if val_batch is not None:
            self.arch_step(train_batch, val_batch, optimizer)
        return self.weight_step(train_batch, optimizer)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based) of ``epochs``: a schedule of the strategy's own (GDAS's
        tau, SNAS's temperature) is set here, from the epoch alone, so a resumed run sets it alike."""

    def trains_architecture(self, epoch: int, warmup_epochs: int) -> bool:
        """Whether epoch ``epoch`` updates the architecture (False: weights only, a warm-up epoch)."""
        return epoch >= warmup_epochs

    def network_change(self, epoch: int, epochs: int) -> Optional[NetworkChange]:
        """Asked before epoch ``epoch`` (not the first): the supernet to go on with (None: this one)."""
        return None

    # ---------------------------------------------------------------- results
    def derive(self) -> Genotype:
        raise NotImplementedError

    def distribution(self) -> dict[str, Any]:
        """The architecture distribution, as plain nested lists (for JSON history)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def derive_from_weights(network: SearchNetwork, op_weights: dict, edge_weights: Optional[dict] = None,
                        *, name: str = "", provenance: Optional[dict] = None) -> Genotype:
    """DARTS's rule: per node keep the two incoming edges with the strongest non-``none`` op
    (times the edge weight, PC-DARTS), each with that op."""
    primitives = network.primitives
    none = primitives.index("none") if "none" in primitives else None
    cells = {}
    for cell_type in CELL_TYPES:
        W = op_weights[cell_type].detach().float().cpu()
        if none is not None:
            W = W.clone()
            W[:, none] = -1.0  # never chosen
        E = None if edge_weights is None or edge_weights[cell_type] is None else edge_weights[cell_type].detach().float().cpu()
        nodes = []
        for i in range(network.steps):
            start = edge_offset(i)
            scores = []
            for j in range(2 + i):
                best = int(W[start + j].argmax())
                strength = float(W[start + j, best]) * (float(E[start + j]) if E is not None else 1.0)
                scores.append((strength, j, best))
            top = sorted(scores, key=lambda s: -s[0])[:2]
            nodes.append(tuple(Edge(primitives[o], j) for _, j, o in sorted(top, key=lambda s: s[1])))
        concat = tuple(range(2 + network.steps - network.cells[0].multiplier, 2 + network.steps))
        cells[cell_type] = Cell(tuple(nodes), concat)
    return Genotype(cells["normal"], cells["reduce"], "darts", name, provenance or {})
