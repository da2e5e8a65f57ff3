"""NASNet's controller: a one-layer LSTM that emits the search space's decisions one after another.

At step ``t`` the LSTM reads the embedding of the previous decision (a learnt start vector at
``t = 0``), and a softmax over the decision's choices picks the next action.  The logits are
``tanh_constant * tanh(z / temperature)`` (``tanh_constant=0`` leaves them as ``z / temperature``):
a higher temperature and a small tanh constant keep the early samples diverse (ENAS's trick).

One code path serves sampling and scoring: :meth:`Controller.forward` with ``actions=None``
samples, and with given actions it returns their log-probabilities under the current weights
(teacher forcing), which PPO's probability ratio needs.  Sampling draws from an explicit
``torch.Generator``, so a search can save and restore it and resume exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from ...errors import ConfigError
from .space import Decision, SearchSpace


@dataclass
class Rollout:
    """A batch of architectures: actions ``(M, T)``, per-decision log-probs and entropies ``(M, T)``."""

    actions: torch.Tensor
    log_probs: torch.Tensor
    entropies: torch.Tensor

    @property
    def log_prob(self) -> torch.Tensor:
        """Log-probability of each whole architecture, ``(M,)``."""
        return self.log_probs.sum(1)

    @property
    def entropy(self) -> torch.Tensor:
        """Summed per-decision entropy of each sample, ``(M,)``."""
        return self.entropies.sum(1)


class Controller(nn.Module):
    """One-layer LSTM controller over a :class:`SearchSpace` (the paper: 100 units)."""

    def __init__(self, space: SearchSpace, hidden_size: int = 100, *, temperature: float = 1.0,
                 tanh_constant: float = 0.0, init_range: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"controller temperature {temperature} must be positive.")
        if tanh_constant < 0:
            raise ConfigError(f"controller tanh_constant {tanh_constant} must be >= 0 (0: off).")
        self.space = space
        self.hidden_size = int(hidden_size)
        self.temperature = float(temperature)
        self.tanh_constant = float(tanh_constant)
        self.start = nn.Parameter(torch.zeros(1, self.hidden_size))
        self.lstm = nn.LSTMCell(self.hidden_size, self.hidden_size)
        # Separate softmax heads per cell type and decision kind; input heads are sliced to the
        # block's 2 + b choices.  Embeddings feed the chosen action back into the LSTM.
        sizes = {"input": space.max_inputs, "op": len(space.ops), "combine": len(space.combines)}
        self.heads = nn.ModuleDict({f"{cell}_{kind}": nn.Linear(self.hidden_size, n)
                                    for cell in ("normal", "reduce") for kind, n in sizes.items()})
        self.embeddings = nn.ModuleDict({f"{cell}_{kind}": nn.Embedding(n, self.hidden_size)
                                         for cell in ("normal", "reduce") for kind, n in sizes.items()})
        for p in self.parameters():   # the paper initialises the controller uniformly in [-0.1, 0.1]
            nn.init.uniform_(p, -init_range, init_range)

    def logits(self, h: torch.Tensor, cell: str, kind: str, num_choices: int) -> torch.Tensor:
        z = self.heads[f"{cell}_{kind}"](h)[:, :num_choices] / self.temperature
        return self.tanh_constant * torch.tanh(z) if self.tanh_constant > 0 else z

    def decisions(self, num_samples: int, actions: Optional[torch.Tensor] = None,
                  generator: Optional[torch.Generator] = None) -> Iterator[tuple[Decision, torch.Tensor, torch.Tensor]]:
        """Step through the decisions: ``(decision, log-softmax over its choices (M, n), action (M,))``,
        sampling each action from ``generator`` or taking it from ``actions``."""
        x = self.start.expand(num_samples, -1)
        state = None
        for t, d in enumerate(self.space.decisions):
            state = self.lstm(x, state)
            logp = torch.log_softmax(self.logits(state[0], d.cell, d.kind, d.num_choices), dim=-1)
            if actions is None:
                a = torch.multinomial(logp.detach().exp().cpu(), 1, generator=generator).squeeze(1).to(logp.device)
            else:
                a = actions[:, t]
            yield d, logp, a
            x = self.embeddings[f"{d.cell}_{d.kind}"](a)

    def forward(self, num_samples: int = 1, *, actions: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Rollout:
        """Sample ``num_samples`` architectures, or score the given ``actions`` ``(M, T)``."""
        if actions is not None:
            actions = torch.as_tensor(actions, dtype=torch.long, device=self.start.device)
            if actions.dim() != 2 or actions.shape[1] != self.space.num_decisions:
                raise ConfigError(f"actions must be (M, {self.space.num_decisions}); got {tuple(actions.shape)}.")
            num_samples = actions.shape[0]
        chosen, log_probs, entropies = [], [], []
        for _, logp, a in self.decisions(num_samples, actions, generator):
            chosen.append(a)
            log_probs.append(logp.gather(1, a[:, None]).squeeze(1))
            entropies.append(-(logp.exp() * logp).sum(1))
        return Rollout(torch.stack(chosen, 1), torch.stack(log_probs, 1), torch.stack(entropies, 1))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Rollout:
        return self(num_samples, generator=generator)

    @torch.no_grad()
    def op_probabilities(self, num_samples: int = 256, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mean probability of each op over all op decisions of ``num_samples`` rollouts, ``(len(ops),)``."""
        op_probs = [logp.exp().mean(0).cpu() for d, logp, _ in self.decisions(num_samples, generator=generator)
                    if d.kind == "op"]
        return torch.stack(op_probs).mean(0)


__all__ = ["Controller", "Rollout"]
