"""Training the controller: PPO (the paper's choice) or REINFORCE, with a moving-average baseline.

Each whole architecture is one action whose log-probability is the sum over its decisions, and
its reward is the child's held-out accuracy.  The advantage is ``reward - baseline``, where the
baseline is an exponential moving average of earlier rewards (the paper: weight 0.95), taken
before the batch it scores.

* PPO (Schulman et al. 2017): ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))`` with the ratio
  ``r = exp(log pi(a) - log pi_old(a))``, optimised for ``ppo_epochs`` passes over each batch.
* REINFORCE: ``-mean(log pi(a) A)``, one pass.

Both subtract ``entropy_weight x`` the mean summed entropy of the decisions (an exploration bonus).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from ...errors import ConfigError
from .controller import Controller, Rollout

ALGORITHMS = ("ppo", "reinforce")


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
             entropy: Optional[torch.Tensor] = None, *, clip: float = 0.2, entropy_weight: float = 0.0) -> torch.Tensor:
    """PPO's clipped surrogate loss (to minimise) minus the entropy bonus; all inputs ``(M,)``."""
    ratio = torch.exp(log_prob - old_log_prob)
    surrogate = torch.min(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
    loss = -surrogate.mean()
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


def reinforce_loss(log_prob: torch.Tensor, advantage: torch.Tensor, entropy: Optional[torch.Tensor] = None, *,
                   entropy_weight: float = 0.0) -> torch.Tensor:
    loss = -(log_prob * advantage).mean()
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


class MovingAverageBaseline:
    """``b <- decay * b + (1 - decay) * mean(batch rewards)``; the first batch sets ``b`` to its mean."""

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"baseline_decay {decay} must be in [0, 1).")
        self.decay = float(decay)
        self.value: Optional[float] = None

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """``rewards - b`` with ``b`` before this batch, then fold the batch into ``b``."""
        mean = float(rewards.mean())
        baseline = mean if self.value is None else self.value
        self.value = mean if self.value is None else self.decay * self.value + (1.0 - self.decay) * mean
        return rewards - baseline


class ControllerTrainer:
    """Samples architectures from a controller and updates it from their rewards."""

    def __init__(self, controller: Controller, *, algorithm: str = "ppo", lr: float = 3.5e-4,
                 entropy_weight: float = 1e-5, baseline_decay: float = 0.95, ppo_clip: float = 0.2,
                 ppo_epochs: int = 4, grad_clip: float = 0.0, seed: int = 0) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"controller algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}.")
        if not 0.0 < ppo_clip < 1.0:
            raise ConfigError(f"ppo_clip {ppo_clip} must be in (0, 1) (the paper's PPO: 0.2).")
        if ppo_epochs < 1:
            raise ConfigError(f"ppo_epochs {ppo_epochs} must be at least 1.")
        self.controller = controller
        self.algorithm = algorithm
        self.entropy_weight = float(entropy_weight)
        self.ppo_clip = float(ppo_clip)
        self.ppo_epochs = int(ppo_epochs) if algorithm == "ppo" else 1
        self.grad_clip = float(grad_clip)
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.baseline = MovingAverageBaseline(baseline_decay)
        self.generator = torch.Generator().manual_seed(int(seed))   # sampling only; saved with the state
        self.updates = 0

    def sample(self, num_samples: int) -> Rollout:
        return self.controller.sample(num_samples, generator=self.generator)

    def update(self, rollout: Rollout, rewards) -> dict:
        """One controller update from a batch of architectures and their rewards; returns its stats."""
        device = self.controller.start.device
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=device).reshape(-1)
        if rewards.numel() != rollout.actions.shape[0]:
            raise ConfigError(f"{rewards.numel()} rewards for {rollout.actions.shape[0]} architectures.")
        baseline_before = self.baseline.value
        advantage = self.baseline.advantages(rewards)
        old_log_prob = rollout.log_prob.detach().to(device)
        stats: dict = {}
        for _ in range(self.ppo_epochs):
            scored = self.controller(actions=rollout.actions)
            if self.algorithm == "ppo":
                loss = ppo_loss(scored.log_prob, old_log_prob, advantage, scored.entropy,
                                clip=self.ppo_clip, entropy_weight=self.entropy_weight)
            else:
                loss = reinforce_loss(scored.log_prob, advantage, scored.entropy, entropy_weight=self.entropy_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.grad_clip)
            self.optimizer.step()
            with torch.no_grad():
                log_ratio = scored.log_prob - old_log_prob
                stats = {"loss": float(loss), "entropy": float(scored.entropy.mean()),
                         "approx_kl": float((log_ratio.exp() - 1 - log_ratio).mean()),
                         "clip_fraction": float(((log_ratio.exp() - 1).abs() > self.ppo_clip).float().mean())}
        self.updates += 1
        stats.update(reward_mean=float(rewards.mean()), reward_max=float(rewards.max()),
                     baseline=baseline_before, advantage_abs=float(advantage.abs().mean()))
        return stats

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"model": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline.value, "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: Mapping) -> None:
        self.controller.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline.value = state["baseline"]
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


__all__ = ["ALGORITHMS", "ControllerTrainer", "MovingAverageBaseline", "ppo_loss", "reinforce_loss"]
