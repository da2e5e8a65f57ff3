"""P-DARTS (Chen, Xie, Wu & Tian, "Progressive Differentiable Architecture Search: Bridging the Depth
Gap between Search and Evaluation", ICCV 2019).

DARTS's softmax mixture, searched in stages on ever deeper supernets with ever fewer candidate ops
per edge.  Faithful to the official code, chenxin061/pdarts (``train_search.py``,
``model_search.py``), as its README runs it (``--add_layers 6 --add_layers 12 --dropout_rate 0.1
--dropout_rate 0.4 --dropout_rate 0.7``):

* **stages**: ``len(num_to_drop)`` stages (3) of ``epochs / stages`` epochs each (25); stage ``s``
  searches a supernet of ``layers + add_layers[s]`` cells (5, 11, 17) and ``C + add_width[s]``
  channels, whose edges hold the ops that survived the earlier stages (8, then 5, then 3);
* **between stages** the official code builds a *new* network (``Network(...)`` in its stage loop):
  fresh weights, fresh alphas (``1e-3 * randn``), a fresh SGD, Adam and cosine schedule over the
  stage's epochs.  Only the *switches* (which ops each edge keeps) carry over: after stage ``s``,
  each edge drops its ``num_to_drop[s]`` ops of lowest softmax weight (``get_min_k``, first minimum
  on ties).  The strategy asks the runner for that network (:meth:`PDARTSStrategy.network_change`);
* **weights-only epochs**: the first ``warmup_epochs`` (10) epochs *of each stage* update the weights
  only (the recipe's ``warmup_epochs`` counts per stage here: the official ``eps_no_archs``);
* **one step** (``train``): first the architecture on a held-out batch (Adam, betas (0.5, 0.999),
  first order, its gradient norm clipped to ``grad_clip``: the official clips the alphas' gradient
  too), then the weights on a train batch (SGD, gradient norm clipped to ``grad_clip``);
* **dropout after every stride-1 skip_connect** (an ``nn.Dropout`` after the identity, built only
  when the stage's rate is positive, as ``MixedOp`` builds it), rate ``dropout_rate[s]`` decayed
  within the stage: ``rate * (E - e - 1) / E`` in weights-only epoch ``e`` of ``E``, then
  ``rate * exp(-dropout_decay * (e - warmup_epochs))`` (:func:`skip_dropout_rate`);
* **the genotype** (after the last stage): the last drop leaves one op per edge and always drops
  ``none`` where it survived (``get_min_k_no_zero``); each node keeps its two edges whose kept op is
  strongest (``none``'s weight set to 0; ``keep_2_branches``); then, in the normal cell only, while it
  holds more than ``max_skip_connects`` (2) skip_connects, the weakest skip_connect's weight is set to
  0 and the ops and edges are chosen again from the last stage's three ops (``delete_min_sk_prob``,
  ``keep_1_on``, ``keep_2_branches``).  The official loop lowers the bound from 8 one by one and logs
  the genotype at each; the sequence of deletions is the same as going straight to the bound, and
  the paper's genotype is the one at 2 (:func:`pdarts_genotype`).

Departures, deliberate:

* The official learning rate is a cosine stepped per epoch (PyTorch 0.4's ``scheduler.step()``
  before each epoch); here the same cosine is stepped per batch, restarted each stage.
* Between the end of the last stage and the genotype, the official code applies the same rules to
  the alphas of the last epoch; every epoch here also logs the genotype these rules give at that
  epoch (the current ops, one kept per edge), which is what ``history.json`` and the collapse guard
  show before the last stage.  Only the last one is the official genotype.
* The op and edge rules identify ``none`` and ``skip_connect`` by name, not by their positions 0
  and 3 in the official ``PRIMITIVES``; with that op order (the supernet's) they are the same.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ...genotype import Cell, Edge, Genotype
from ...ops.darts import DARTS_PRIMITIVES
from ...recipe_file import RecipeError
from ..supernet import CELL_TYPES, SearchNetwork, edge_offset, num_edges
from .base import Batch, NetworkChange, SearchStrategy
from .registry import Strategy, arch_options, check_full_channels_first_order, register_strategy, supernet_summary

NONE, SKIP = "none", "skip_connect"
Switches = list[list[bool]]   # per edge, per op of the full op list: still a candidate


# ---------------------------------------------------------------- the official rules, on plain lists
def min_k(weights: list[float], k: int) -> list[int]:
    """``get_min_k``: positions of the ``k`` smallest weights, the first one on ties."""
    w = list(weights)
    out = []
    for _ in range(k):
        i = w.index(min(w))
        out.append(i)
        w[i] = 1.0
    return out


def min_k_no_zero(weights: list[float], on: list[int], k: int, none: Optional[int]) -> list[int]:
    """``get_min_k_no_zero``: as :func:`min_k`, but where ``none`` (its index in the full op list) is
    still a candidate (in ``on``) it is always one of the ``k`` dropped."""
    w = list(weights)
    if none is None or none not in on:
        return min_k(w, k)
    skip = on.index(none)
    rest = w[:skip] + w[skip + 1:]
    return [skip] + [i + (i >= skip) for i in min_k(rest, k - 1)]


def ops_on(row: list[bool]) -> list[int]:
    return [k for k, on in enumerate(row) if on]


def drop_ops(switches: Switches, probs: list[list[float]], k: int, *, no_zero: bool,
             none: Optional[int]) -> Switches:
    """Each edge's ``k`` weakest candidates switched off (``probs[e]``: one weight per op still on)."""
    out = copy.deepcopy(switches)
    for e, row in enumerate(out):
        on = ops_on(row)
        for i in (min_k_no_zero(probs[e], on, k, none) if no_zero else min_k(probs[e], k)):
            row[on[i]] = False
    return out


def keep_two_edges(switches: Switches, probs: list[list[float]], steps: int) -> Switches:
    """``keep_2_branches``: per node, the two edges of the largest max weight (a stable ascending sort,
    its last two), every op of the other edges switched off."""
    strength = [max(row) for row in probs]
    keep = set()
    for i in range(steps):
        start, n = edge_offset(i), 2 + i
        ranked = sorted(range(n), key=lambda j: strength[start + j])
        keep.update((start + ranked[-1], start + ranked[-2]))
    return [list(row) if e in keep else [False] * len(row) for e, row in enumerate(switches)]


def count_skips(switches: Switches, skip: Optional[int]) -> int:
    """``check_sk_number``."""
    return 0 if skip is None else sum(bool(row[skip]) for row in switches)


def delete_weakest_skip(switches: Switches, last: Switches, probs: list[list[float]],
                        skip: int) -> list[list[float]]:
    """``delete_min_sk_prob``: of the edges whose kept op is skip_connect, the one with the smallest
    skip_connect weight gets weight 0 (``last``: the last stage's switches, the columns of ``probs``)."""
    out = [list(row) for row in probs]
    column = [sum(last[e][:skip]) if switches[e][skip] else -1 for e in range(len(switches))]
    skip_prob = [out[e][c] if c >= 0 else 1.0 for e, c in enumerate(column)]
    e = skip_prob.index(min(skip_prob))
    out[e][column[e]] = 0.0
    return out


def pdarts_genotype(probs: dict, switches: dict, primitives, steps: int, max_skips: int) -> tuple[dict, dict]:
    """The official final switches from the last stage's op weights (``probs[cell]``: edges x ops on)
    and switches: one op on each kept edge, two edges per node, at most ``max_skips`` skip_connects in
    the normal cell.  Returns ``(switches, details)``; details: the normal cell's skip_connects before
    the restriction and how many skip weights it zeroed."""
    none = primitives.index(NONE) if NONE in primitives else None
    skip = primitives.index(SKIP) if SKIP in primitives else None
    final, details = {}, {}
    for t in CELL_TYPES:
        last = switches[t]
        p = [list(row) for row in probs[t]]
        for e, row in enumerate(last):   # "remove all Zero operations"
            if none is not None and row[none]:
                p[e][ops_on(row).index(none)] = 0.0
        keep_one = len(p[0]) - 1
        sw = keep_two_edges(drop_ops(last, p, keep_one, no_zero=True, none=none), p, steps)
        if t == "normal":
            details["skip_connects_before_restriction"] = count_skips(sw, skip)
            zeroed = 0
            while count_skips(sw, skip) > max_skips and zeroed <= len(sw):   # (bounded: one weight per edge)
                p = delete_weakest_skip(sw, last, p, skip)
                sw = keep_two_edges(drop_ops(last, p, keep_one, no_zero=True, none=none), p, steps)
                zeroed += 1
            details["skip_weights_zeroed"] = zeroed
        final[t] = sw
    return final, details


def parse_switches(switches: Switches, primitives, steps: int) -> list[list[tuple[str, int]]]:
    """``parse_network``: per node, its ``(op, input)`` pairs in the order of its edges."""
    return [[(primitives[k], j) for j in range(2 + i) for k in ops_on(switches[edge_offset(i) + j])]
            for i in range(steps)]


def stage_network(options: "PDARTSOptions", stage: int, switches: dict, layers: int, C: int,
                  stage_epochs: int) -> NetworkChange:
    """The supernet of ``stage`` (``layers + add_layers[stage]`` cells, ``C + add_width[stage]``
    channels, the ops ``switches`` leave, a dropout after skip_connect where the stage's rate is
    positive) and its schedule over the stage's epochs."""
    return NetworkChange({"layers": layers + int(options.add_layers[stage]), "C": C + int(options.add_width[stage]),
                          "edge_ops": {t: [ops_on(row) for row in switches[t]] for t in CELL_TYPES},
                          "skip_dropout": float(options.dropout_rate[stage]) > 0}, stage_epochs)


def skip_dropout_rate(rate: float, epoch: int, epochs: int, weights_only: int, decay: float) -> float:
    """The dropout of stage epoch ``epoch`` (0-based) of ``epochs``: ``rate * (epochs - epoch - 1) /
    epochs`` in the weights-only epochs, then ``rate * exp(-decay * (epoch - weights_only))``."""
    if epoch < weights_only:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-(epoch - weights_only) * decay)


# ---------------------------------------------------------------- the strategy
@dataclass
class PDARTSOptions:
    """P-DARTS's own recipe keys (``options:`` with ``strategy: pdarts``); one entry per stage."""
    add_layers: list = field(default_factory=lambda: [0, 6, 12])   # --add_layers: cells over `layers`
    add_width: list = field(default_factory=lambda: [0, 0, 0])     # --add_width: channels over `C`
    num_to_drop: list = field(default_factory=lambda: [3, 2, 2])   # ops each edge drops after the stage
    dropout_rate: list = field(default_factory=lambda: [0.1, 0.4, 0.7])   # --dropout_rate: on skip_connect
    dropout_decay: float = 0.2    # scale_factor: exp(-0.2 (epoch - warm-up)) after the weights-only epochs
    max_skip_connects: int = 2    # the normal cell's skip_connects the final genotype keeps at most

    def __post_init__(self) -> None:
        stages = len(self.num_to_drop)
        lengths = {k: len(getattr(self, k)) for k in ("add_layers", "add_width", "num_to_drop", "dropout_rate")}
        if stages < 1 or len(set(lengths.values())) != 1:
            raise RecipeError(f"recipe keys 'options.add_layers', 'add_width', 'num_to_drop', 'dropout_rate' give one "
                              f"value per stage and must be as long, got lengths {lengths} (the official: 3 each).")
        if any(int(k) < 1 for k in self.num_to_drop):
            raise RecipeError(f"recipe key 'options.num_to_drop' = {self.num_to_drop}: every stage drops at least one op.")
        if any(int(k) < 0 for k in self.add_layers + self.add_width):
            raise RecipeError(f"recipe keys 'options.add_layers' = {self.add_layers} and 'options.add_width' = "
                              f"{self.add_width} add cells and channels: none may be negative.")
        if any(not 0.0 <= float(r) < 1.0 for r in self.dropout_rate):
            raise RecipeError(f"recipe key 'options.dropout_rate' = {self.dropout_rate}: each rate must be in [0, 1).")
        if self.dropout_decay < 0 or self.max_skip_connects < 0:
            raise RecipeError(f"recipe keys 'options.dropout_decay' = {self.dropout_decay} and "
                              f"'options.max_skip_connects' = {self.max_skip_connects} must not be negative.")


class PDARTSStrategy(SearchStrategy):
    name = "pdarts"

    def __init__(self, network: SearchNetwork, *, options: Optional[PDARTSOptions] = None, epochs: int = 75,
                 warmup_epochs: int = 10, layers: Optional[int] = None, C: Optional[int] = None,
                 arch_lr: float = 6e-4, arch_betas=(0.5, 0.999), arch_weight_decay: float = 1e-3,
                 grad_clip: Optional[float] = 5.0) -> None:
        super().__init__(network, grad_clip=grad_clip)
        self.options = options or PDARTSOptions()
        self.stages = len(self.options.num_to_drop)
        self.stage_epochs = epochs // self.stages
        self.warmup_epochs = warmup_epochs
        # The stage-0 network's depth and width: the recipe's (the first stage adds add_*[0] to them).
        self.base_layers = network.layers - self.options.add_layers[0] if layers is None else layers
        self.base_C = network.C - self.options.add_width[0] if C is None else C
        self.arch_params = network.arch_parameters()
        self.arch_optimizer = torch.optim.Adam(self.arch_params, lr=arch_lr, betas=tuple(arch_betas),
                                               weight_decay=arch_weight_decay)
        K = len(network.primitives)
        self.switches = {t: [[k in ops for k in range(K)] for ops in network.edge_ops[t]] for t in CELL_TYPES}
        self.epoch = 0

    # ---------------------------------------------------------------- stages
    def stage_of(self, epoch: int) -> tuple[int, int]:
        """(stage, epoch within it)."""
        stage = min(epoch // self.stage_epochs, self.stages - 1)
        return stage, epoch - stage * self.stage_epochs

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch
        stage, e = self.stage_of(epoch)
        self.network.skip_dropout_prob = skip_dropout_rate(float(self.options.dropout_rate[stage]), e,
                                                           self.stage_epochs, self.warmup_epochs,
                                                           self.options.dropout_decay)

    def trains_architecture(self, epoch: int, warmup_epochs: int) -> bool:
        return self.stage_of(epoch)[1] >= self.warmup_epochs

    def next_switches(self, stage: int) -> dict:
        """The switches after ``stage``'s drop (this network's): its ``num_to_drop`` weakest ops per
        edge, ``none`` always among them in the last stage."""
        prims = self.network.primitives
        return {t: drop_ops(self.switches[t], self._probs(t), int(self.options.num_to_drop[stage]),
                            no_zero=stage == self.stages - 1, none=prims.index(NONE) if NONE in prims else None)
                for t in CELL_TYPES}

    def network_change(self, epoch: int, epochs: int) -> Optional[NetworkChange]:
        stage, e = self.stage_of(epoch)
        if e or stage == 0:   # (the runner asks once per epoch, on the network of the epoch before)
            return None
        return stage_network(self.options, stage, self.next_switches(stage - 1), self.base_layers, self.base_C,
                             self.stage_epochs)

    # ---------------------------------------------------------------- one step: architecture, then weights
    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        x, y = val_batch
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.forward(x), y)
        for p, g in zip(self.arch_params, torch.autograd.grad(loss, self.arch_params)):
            p.grad = g
        self.all_reduce_mean([p.grad for p in self.arch_params])
        if self.grad_clip:   # the official clips the architecture's gradient as well
            nn.utils.clip_grad_norm_(self.arch_params, self.grad_clip)
        self.arch_optimizer.step()
        return {"arch_loss": loss.detach()}

    # ---------------------------------------------------------------- results
    def _probs(self, cell_type: str) -> list[list[float]]:
        return self.network.op_weights(cell_type).detach().float().cpu().tolist()

    def _final_switches(self) -> tuple[dict, dict]:
        net = self.network
        return pdarts_genotype({t: self._probs(t) for t in CELL_TYPES}, self.switches, list(net.primitives),
                               net.steps, self.options.max_skip_connects)

    def derive(self, *, name: str = "", provenance: Optional[dict] = None) -> Genotype:
        """The official genotype after the last stage; in an earlier epoch, what its rules give for
        the ops of that epoch."""
        net = self.network
        final, _ = self._final_switches()
        concat = tuple(range(2 + net.steps - net.cells[0].multiplier, 2 + net.steps))
        cells = {t: Cell(tuple(tuple(Edge(op, j) for op, j in node)
                               for node in parse_switches(final[t], net.primitives, net.steps)), concat)
                 for t in CELL_TYPES}
        return Genotype(cells["normal"], cells["reduce"], "darts", name, provenance or {})

    def distribution(self) -> dict:
        """Op weights in the full op list's columns (null: no longer a candidate), the stage, the
        skip_connect dropout; at a stage's last epoch the ops its drop removes (``dropped_*``), and
        the normal cell's skip_connects before the final restriction."""
        net, prims = self.network, self.network.primitives
        out = {}
        for t in CELL_TYPES:
            rows = []
            for row, probs in zip(self.switches[t], self._probs(t)):
                it = iter(probs)
                rows.append([next(it) if on else None for on in row])
            out[f"alphas_{t}"] = rows
        stage, e = self.stage_of(self.epoch)
        out.update(stage=stage + 1, ops_per_edge=len(ops_on(self.switches["normal"][0])), layers=net.layers,
                   skip_dropout=net.skip_dropout_prob)
        if e == self.stage_epochs - 1:   # the stage's drop, and after the last the skip restriction
            after = self.next_switches(stage)
            if stage == self.stages - 1:
                out.update(self._final_switches()[1])
            for t in CELL_TYPES:
                out[f"dropped_{t}"] = [[prims[k] for k in ops_on(row) if not new[k]]
                                       for row, new in zip(self.switches[t], after[t])]
        return out

    def state_dict(self) -> dict:
        return {"arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])


def _check(recipe) -> None:
    check_full_channels_first_order(recipe, "pdarts", "mixes every op", "has a first-order architecture step only")
    options = recipe.strategy_options()
    stages = len(options.num_to_drop)
    if recipe.epochs % stages:
        raise RecipeError(f"recipe key 'epochs' = {recipe.epochs} must split into {stages} stages of as many epochs "
                          f"(the official: 75 = 3 x 25); use a multiple of {stages}.")
    if recipe.warmup_epochs >= recipe.epochs // stages:
        raise RecipeError(f"recipe key 'warmup_epochs' = {recipe.warmup_epochs} counts per stage for pdarts and must be "
                          f"below the stage's {recipe.epochs // stages} epochs (the official: 10 of 25).")
    if sum(int(k) for k in options.num_to_drop) != len(DARTS_PRIMITIVES) - 1:
        raise RecipeError(f"recipe key 'options.num_to_drop' = {options.num_to_drop} must sum to "
                          f"{len(DARTS_PRIMITIVES) - 1}: the last stage leaves one of the {len(DARTS_PRIMITIVES)} "
                          "ops per edge (the official: 3, 2, 2).")
    if recipe.layers + min(int(k) for k in options.add_layers) < 3:
        raise RecipeError(f"recipe key 'layers' = {recipe.layers} with 'options.add_layers' = {options.add_layers}: "
                          "every stage needs at least 3 cells.")


def _first_network(recipe) -> NetworkChange:
    """Stage 1: every op on every edge."""
    options = recipe.strategy_options()
    every = [[True] * len(DARTS_PRIMITIVES) for _ in range(num_edges(recipe.steps))]
    return stage_network(options, 0, {t: every for t in CELL_TYPES}, recipe.layers, recipe.C,
                         recipe.epochs // len(options.num_to_drop))


def _build(recipe, network: SearchNetwork) -> PDARTSStrategy:
    return PDARTSStrategy(network, options=recipe.strategy_options(), epochs=recipe.epochs,
                          warmup_epochs=recipe.warmup_epochs, layers=recipe.layers, C=recipe.C, **arch_options(recipe))


register_strategy(Strategy(
    "pdarts", title="P-DARTS", summary=supernet_summary, build=_build, options=PDARTSOptions, check=_check,
    first_network=_first_network))
