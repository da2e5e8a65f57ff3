"""PARSEC (Casale, Gordon, Fusi 2019): probabilistic architecture search by empirical Bayes.

Architectures alpha are drawn from a prior p(alpha | pi) with independent categorical factors:
for every node of each cell type and each of its two edges, one over the node's possible inputs
and one over the ops (``none`` excluded).  A step samples M architectures and runs only those on
the shared weights v (the memory of one architecture at a time).  With each sample's batch
log-likelihood ``log p(D | alpha_m, v) = -sum of its cross-entropies``, the normalised importance
weights ``w_m = softmax_m(log p(D | alpha_m, v))`` turn the M samples into a Monte Carlo estimate of
the marginal likelihood's gradient:

* weights:         grad_v  ~= sum_m w_m grad_v [-log p(D_train | alpha_m, v)]
* hyperparameters: grad_pi ~= sum_m w_m grad_pi log p(alpha_m | pi)   (ascended, on held-out data)

The derived genotype is the most probable architecture under pi.  ``init_distribution`` warm-starts
pi from another run, to transfer a distribution learnt on a proxy to a larger network or dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError, ConfigError
from ...recipe_file import RecipeError
from ...runs.checkpoint import load_checkpoint
from ...runs.envelope import run_kind
from ...genotype import Cell, Edge, Genotype
from ..supernet import CELL_TYPES, SearchNetwork
from .base import Batch, SearchStrategy
from .registry import Strategy, arch_options, register_strategy, supernet_summary

SLOTS = 2  # edges per node


def generator_on(device: torch.device, generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """The sampling generator on the probabilities' device (``torch.multinomial`` refuses a CPU
    generator for CUDA probabilities), seeded as the one given, so every rank still draws alike."""
    if generator is None or generator.device == torch.device(device):
        return generator
    return torch.Generator(device=device).manual_seed(generator.initial_seed())


class PARSECStrategy(SearchStrategy):
    name = "parsec"

    def __init__(self, network: SearchNetwork, *, num_samples: int = 8, arch_lr: float = 3e-3,
                 arch_betas=(0.5, 0.999), arch_weight_decay: float = 0.0, grad_clip: Optional[float] = 5.0,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__(network, grad_clip=grad_clip)
        if num_samples < 1:
            raise ConfigError(f"PARSEC needs at least one sample per step, got num_samples={num_samples}.")
        self.num_samples = num_samples
        self.op_choices = [i for i, p in enumerate(network.primitives) if p != "none"]
        steps, device = network.steps, network.alphas_normal.device
        self.generator = generator_on(device, generator)
        # Node i may read states 0..i+1: inputs beyond that are masked out of the categorical.
        self.input_mask = torch.tensor([[j < 2 + i for j in range(steps + 1)] for i in range(steps)],
                                       device=device)
        self.pi = nn.ParameterDict()
        for t in CELL_TYPES:
            self.pi[f"input_{t}"] = nn.Parameter(torch.zeros(steps, SLOTS, steps + 1, device=device))
            self.pi[f"op_{t}"] = nn.Parameter(torch.zeros(steps, SLOTS, len(self.op_choices), device=device))
        self.arch_optimizer = torch.optim.Adam(self.pi.parameters(), lr=arch_lr, betas=tuple(arch_betas),
                                               weight_decay=arch_weight_decay)

    # ---------------------------------------------------------------- the prior
    def log_probs(self) -> dict[str, torch.Tensor]:
        out = {}
        for t in CELL_TYPES:
            logits = self.pi[f"input_{t}"].masked_fill(~self.input_mask[:, None, :], float("-inf"))
            out[f"input_{t}"] = F.log_softmax(logits, dim=-1)
            out[f"op_{t}"] = F.log_softmax(self.pi[f"op_{t}"], dim=-1)
        return out

    def sample(self) -> tuple[dict, dict]:
        """One architecture: ``choice[cell][node] = [(input, op_index), (input, op_index)]`` and the
        sampled category indices (to score under pi)."""
        logp = self.log_probs()
        choice, index = {}, {}
        for t in CELL_TYPES:
            inputs = torch.multinomial(logp[f"input_{t}"].exp().flatten(0, 1), 1, generator=self.generator)
            ops = torch.multinomial(logp[f"op_{t}"].exp().flatten(0, 1), 1, generator=self.generator)
            inputs = inputs.view(-1, SLOTS)
            ops = ops.view(-1, SLOTS)
            index[t] = (inputs, ops)
            choice[t] = self._choice(inputs, ops)
        return choice, index

    def _choice(self, inputs: torch.Tensor, ops: torch.Tensor) -> list:
        """Category indices as ``forward_discrete``'s lists: one device-to-host copy, not one per element."""
        pairs = torch.stack([inputs, ops], dim=-1).tolist()
        return [[(j, self.op_choices[o]) for j, o in node] for node in pairs]

    def log_prior(self, index: dict) -> torch.Tensor:
        """log p(alpha | pi) of a sample, differentiable in pi."""
        logp = self.log_probs()
        total = 0.0
        for t in CELL_TYPES:
            inputs, ops = index[t]
            total = total + logp[f"input_{t}"].gather(-1, inputs[..., None]).sum()
            total = total + logp[f"op_{t}"].gather(-1, ops[..., None]).sum()
        return total

    @staticmethod
    def importance_weights(nll_sums: torch.Tensor) -> torch.Tensor:
        """Normalised importance weights from each sample's summed negative log-likelihood."""
        return F.softmax(-nll_sums, dim=0)

    def _global_nlls(self, nlls: list) -> torch.Tensor:
        """Summed NLLs over every process's share of the batch (samples are the same on all ranks:
        the sampling generator is seeded alike)."""
        total = torch.stack(nlls).float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
        return total

    def _run(self, x: torch.Tensor, choice: dict) -> torch.Tensor:
        with self.autocast():
            return self.network.forward_discrete(x, choice)

    def most_probable(self) -> dict:
        """The argmax architecture as a ``forward_discrete`` choice."""
        logp = self.log_probs()
        choice = {}
        for t in CELL_TYPES:
            choice[t] = self._choice(logp[f"input_{t}"].argmax(-1), logp[f"op_{t}"].argmax(-1))
        return choice

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.most_probable())

    # ---------------------------------------------------------------- steps
    def weight_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        net = self.network
        params = [p for p in net.weight_parameters()]
        optimizer.zero_grad(set_to_none=True)
        nlls, grads, best_logits = [], [], None
        # Each sample's gradient is kept (parameters are small), so one forward/backward per
        # sample suffices and only one architecture's activations are alive at a time.
        for _ in range(self.num_samples):
            choice, _ = self.sample()
            logits = self._run(x, choice)
            nll = self.loss(logits, y) * x.shape[0]
            g = torch.autograd.grad(nll / x.shape[0], params, allow_unused=True)
            nlls.append(nll.detach())
            grads.append(g)
            if best_logits is None or nll.detach() < min(nlls[:-1]):
                best_logits = logits.detach()
        w = self.importance_weights(self._global_nlls(nlls))
        for k, p in enumerate(params):
            parts = [w[m] * grads[m][k] for m in range(self.num_samples) if grads[m][k] is not None]
            p.grad = sum(parts) if parts else None
        self._clip_and_step(optimizer)
        loss = (w * torch.stack(nlls)).sum() / x.shape[0]
        return loss.detach(), best_logits

    def arch_step(self, train_batch: Batch, val_batch: Batch, w_optimizer: torch.optim.Optimizer) -> dict:
        x, y = val_batch
        samples, nlls = [], []
        with torch.no_grad():
            for _ in range(self.num_samples):
                choice, index = self.sample()
                samples.append(index)
                nlls.append(self.loss(self._run(x, choice), y) * x.shape[0])
        w = self.importance_weights(self._global_nlls(nlls))
        self.arch_optimizer.zero_grad(set_to_none=True)
        objective = -sum(w[m] * self.log_prior(samples[m]) for m in range(self.num_samples))
        objective.backward()
        self.all_reduce_mean([p.grad for p in self.pi.parameters()])
        self.arch_optimizer.step()
        # Tensors, not floats: the caller decides when to sync with the device.
        return {"arch_loss": ((w * torch.stack(nlls)).sum() / x.shape[0]).detach(),
                "ess": (1.0 / (w ** 2).sum()).detach()}  # effective sample size of the weights

    # ---------------------------------------------------------------- results
    def derive(self, *, name: str = "", provenance: Optional[dict] = None) -> Genotype:
        """The most probable architecture under pi."""
        prims = self.network.primitives
        steps = self.network.steps
        concat = tuple(range(2 + steps - self.network.cells[0].multiplier, 2 + steps))
        cells = {}
        for t, nodes in self.most_probable().items():
            cells[t] = Cell(tuple(tuple(sorted((Edge(prims[o], j) for j, o in pairs), key=lambda e: e.input))
                                  for pairs in nodes), concat)
        return Genotype(cells["normal"], cells["reduce"], "darts", name, provenance or {})

    def distribution(self) -> dict:
        return {k: v.exp().detach().cpu().tolist() for k, v in self.log_probs().items()}

    def state_dict(self) -> dict:
        state = {"pi": {k: v.detach().clone() for k, v in self.pi.items()},
                 "arch_optimizer": self.arch_optimizer.state_dict()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.init_distribution(state["pi"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"].cpu())   # map_location may have moved it

    def init_distribution(self, pi: dict) -> None:
        """Warm-start pi from another run (same number of nodes and op set)."""
        for k, v in pi.items():
            if k not in self.pi or self.pi[k].shape != v.shape:
                raise ConfigError(f"cannot initialise PARSEC's distribution from {k!r} of shape "
                                  f"{tuple(v.shape)}: this search has {tuple(self.pi[k].shape) if k in self.pi else 'no such factor'} "
                                  "(the runs need the same number of nodes and the same ops).")
            with torch.no_grad():
                self.pi[k].copy_(v)


@dataclass
class PARSECOptions:
    """PARSEC's own recipe keys (``options:`` with ``strategy: parsec``)."""
    samples: int = 8              # architectures sampled per step (M)
    init_distribution: str = ""   # a PARSEC run directory whose learnt distribution warm-starts pi

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise RecipeError(f"recipe key 'options.samples' = {self.samples} must be at least 1 (architectures "
                              "sampled per step).")


def _build(recipe, network: SearchNetwork) -> PARSECStrategy:
    # Its own generator, seeded alike on every rank: all ranks sample the same architectures.
    generator = torch.Generator(device="cpu").manual_seed(recipe.seed)
    return PARSECStrategy(network, num_samples=recipe.strategy_options().samples, generator=generator,
                          **arch_options(recipe))


def _warm_start(strategy: PARSECStrategy, options: PARSECOptions) -> None:
    if not options.init_distribution:
        return
    source = load_checkpoint(Path(options.init_distribution) / run_kind("search").checkpoint)
    if "pi" not in (source.get("strategy") or {}):
        raise CheckpointError(f"{options.init_distribution} is not a PARSEC search (its checkpoint has no "
                              "distribution pi); pass the run directory of a `strategy: parsec` search.")
    strategy.init_distribution(source["strategy"]["pi"])


# PARSEC samples whole architectures: no edge normalisation in its supernet.
register_strategy(Strategy(
    "parsec", title="PARSEC", summary=supernet_summary, build=_build, options=PARSECOptions,
    moved_keys={"parsec_samples": ("samples", 8), "init_distribution": ("init_distribution", "")},
    network={"edge_norm": False}, warm_start=_warm_start))
