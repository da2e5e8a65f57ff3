"""ENAS's micro controller and its REINFORCE update (melodyguan/enas ``micro_controller.py``).

The sampler is not NASNet's (``search/rl/controller.py``), so it is a module of its own that returns
the same :class:`~nasnetzoo.search.rl.controller.Rollout`:

* a one-layer LSTM (``lstm_size`` 64, no biases, as ``stack_lstm``) runs through the normal cell,
  then the reduction cell from the state the normal cell left;
* per cell it first steps twice on the start vector ``g_emb`` to make the anchors of the two inputs
  (zero vectors, with ``w_attn_1`` of the LSTM output as attention keys);
* per node: two input picks by attention, ``v^T tanh(W1 h_j + W2 h_t)`` over the anchors so far
  (after each the next LSTM input is the picked anchor), then two op picks from ``w_soft h + b_soft``
  (``b_soft`` starts at ``[10, 10, 0, ...]``: the two separable convs first; after each the next input
  is the op's embedding), then one more step whose output is the node's anchor;
* logits: ``/ temperature`` (off in the official search) then ``c tanh(.)`` with ``c = tanh_constant``
  for inputs and ``tanh_constant / op_tanh_reduce`` for ops; the normal cell's op logits also get
  the fixed ``[0.25, 0.25, -0.25, ...]`` (``b_soft_no_learn``, ``use_bias=True``).

The update (``build_trainer``): reward ``R = acc + entropy_weight * H`` with ``H`` the summed
entropy, held constant (``stop_gradient``); the baseline moves first, ``b <- b - (1 - decay)(b - R)``
(starting at 0), and the loss is ``-log pi(a) (R - b)`` with that new ``b``.  So the entropy bonus
enters through the reward, not as a ``-w grad H`` term.  ``controller_num_aggregate`` samples'
gradients are averaged per Adam step (``SyncReplicasOptimizer``), the baseline moving per sample.
Adam with ``beta1 = 0``, ``epsilon = 1e-3`` (``get_train_ops``), no clipping, no lr decay.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from ...errors import ConfigError
from ..rl.controller import Rollout


class ENASController(nn.Module):
    """The micro controller over ``num_nodes`` nodes and ``num_ops`` ops (see the module docstring)."""

    def __init__(self, num_nodes: int = 5, num_ops: int = 5, lstm_size: int = 64, *, tanh_constant: float = 1.10,
                 op_tanh_reduce: float = 2.5, temperature: float = 0.0, init_range: float = 0.1) -> None:
        super().__init__()
        if tanh_constant < 0 or temperature < 0 or op_tanh_reduce <= 0:
            raise ConfigError(f"tanh_constant={tanh_constant} and temperature={temperature} must be >= 0 (0: off), "
                              f"op_tanh_reduce={op_tanh_reduce} > 0.")
        self.num_nodes, self.num_ops, self.lstm_size = int(num_nodes), int(num_ops), int(lstm_size)
        self.tanh_constant, self.op_tanh_reduce, self.temperature = float(tanh_constant), float(op_tanh_reduce), \
            float(temperature)
        H = self.lstm_size
        self.lstm = nn.LSTMCell(H, H, bias=False)
        self.g_emb = nn.Parameter(torch.empty(1, H))
        self.w_emb = nn.Embedding(num_ops, H)
        self.w_soft = nn.Linear(H, num_ops)
        self.w_attn_1 = nn.Linear(H, H, bias=False)
        self.w_attn_2 = nn.Linear(H, H, bias=False)
        self.v_attn = nn.Linear(H, 1, bias=False)
        for p in self.parameters():   # tf.random_uniform_initializer(-0.1, 0.1)
            nn.init.uniform_(p, -init_range, init_range)
        with torch.no_grad():
            self.w_soft.bias.zero_()
            self.w_soft.bias[:2] = 10.0
        self.register_buffer("b_soft_no_learn", torch.tensor([0.25, 0.25] + [-0.25] * (num_ops - 2)),
                             persistent=False)

    @property
    def num_decisions(self) -> int:
        return 2 * 4 * self.num_nodes

    def _squash(self, logits: torch.Tensor, constant: float) -> torch.Tensor:
        if self.temperature > 0:
            logits = logits / self.temperature
        return constant * torch.tanh(logits) if self.tanh_constant > 0 else logits

    def forward(self, num_samples: int = 1, *, actions: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Rollout:
        """Sample ``num_samples`` arcs (normal then reduce, ``4 B`` ints each in ENAS's layout), or
        score the given ``actions`` ``(M, 8 B)``; per-decision log-probs and entropies in that layout."""
        device = self.g_emb.device
        if actions is not None:
            actions = torch.as_tensor(actions, dtype=torch.long, device=device)
            if actions.dim() != 2 or actions.shape[1] != self.num_decisions:
                raise ConfigError(f"actions must be (M, {self.num_decisions}); got {tuple(actions.shape)}.")
            num_samples = actions.shape[0]
        M, B = num_samples, self.num_nodes
        chosen: list = [None] * self.num_decisions
        log_probs: list = [None] * self.num_decisions
        entropies: list = [None] * self.num_decisions
        rows = torch.arange(M, device=device)

        def decide(t: int, logits: torch.Tensor) -> torch.Tensor:
            logp = torch.log_softmax(logits, -1)
            if actions is None:
                a = torch.multinomial(logp.detach().exp().cpu(), 1, generator=generator).squeeze(1).to(device)
            else:
                a = actions[:, t]
            chosen[t], log_probs[t] = a, logp.gather(1, a[:, None]).squeeze(1)
            entropies[t] = -(logp.exp() * logp).sum(1)
            return a

        state = (torch.zeros(M, self.lstm_size, device=device, dtype=self.g_emb.dtype),) * 2
        g = self.g_emb.expand(M, -1)
        for c in range(2):   # normal, reduce
            base = 4 * B * c
            anchors, keys = [], []
            x = g
            for _ in range(2):
                state = self.lstm(x, state)
                anchors.append(torch.zeros_like(state[0]))
                keys.append(self.w_attn_1(state[0]))
            for b in range(B):
                for i in range(2):   # the two inputs
                    state = self.lstm(x, state)
                    query = torch.tanh(torch.stack(keys, 1) + self.w_attn_2(state[0])[:, None])
                    a = decide(base + 4 * b + 2 * i, self._squash(self.v_attn(query).squeeze(2), self.tanh_constant))
                    x = torch.stack(anchors, 1)[rows, a]
                for i in range(2):   # the two ops
                    state = self.lstm(x, state)
                    logits = self._squash(self.w_soft(state[0]), self.tanh_constant / self.op_tanh_reduce)
                    if c == 0:
                        logits = logits + self.b_soft_no_learn
                    x = self.w_emb(decide(base + 4 * b + 2 * i + 1, logits))
                state = self.lstm(x, state)
                anchors.append(state[0])
                keys.append(self.w_attn_1(state[0]))
                x = g
        return Rollout(torch.stack(chosen, 1), torch.stack(log_probs, 1), torch.stack(entropies, 1))

    @torch.no_grad()
    def sample(self, num_samples: int = 1, generator: Optional[torch.Generator] = None) -> Rollout:
        return self(num_samples, generator=generator)


def enas_reward(accuracy: torch.Tensor, entropy: torch.Tensor, entropy_weight: float) -> torch.Tensor:
    """``acc + w H`` with ``H`` held constant (the official ``stop_gradient``)."""
    return accuracy + entropy_weight * entropy.detach()


def moved_baseline(baseline: float, reward: float, decay: float) -> float:
    """``b - (1 - decay) (b - R)``: the baseline after one reward (it moves before the loss reads it)."""
    return baseline - (1.0 - decay) * (baseline - reward)


def enas_loss(log_prob: torch.Tensor, reward: torch.Tensor, baseline: float) -> torch.Tensor:
    """``-log pi(a) (R - b)``: the official ``sample_log_prob * (reward - baseline)`` (its
    ``sample_log_prob`` is a cross-entropy, i.e. ``-log pi``)."""
    return -log_prob * (reward.detach() - baseline)


class ENASControllerTrainer:
    """Samples arcs and updates the controller from their rewards, as ``build_trainer`` does."""

    def __init__(self, controller: ENASController, *, lr: float = 0.0035, entropy_weight: float = 1e-4,
                 baseline_decay: float = 0.99, seed: int = 0) -> None:
        if not 0.0 <= baseline_decay < 1.0:
            raise ConfigError(f"baseline_decay {baseline_decay} must be in [0, 1) (ENAS: 0.99).")
        self.controller = controller
        self.entropy_weight, self.decay = float(entropy_weight), float(baseline_decay)
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-3)
        self.baseline = 0.0
        self.generator = torch.Generator().manual_seed(int(seed))   # sampling only; saved with the state
        self.updates = 0

    def sample(self, num_samples: int = 1) -> Rollout:
        return self.controller.sample(num_samples, generator=self.generator)

    def update(self, score, num_aggregate: int) -> dict:
        """One Adam step from ``num_aggregate`` arcs, each sampled with its graph and scored by
        ``score(actions (8 B,)) -> accuracy in [0, 1]``; gradients averaged over the arcs."""
        self.optimizer.zero_grad(set_to_none=True)
        accs, rewards, entropies = [], [], []
        for _ in range(num_aggregate):
            rollout = self.controller(1, generator=self.generator)
            acc = float(score(rollout.actions[0].tolist()))
            reward = enas_reward(torch.tensor(acc, dtype=rollout.log_prob.dtype), rollout.entropy[0], self.entropy_weight)
            self.baseline = moved_baseline(self.baseline, float(reward), self.decay)
            (enas_loss(rollout.log_prob[0], reward, self.baseline) / num_aggregate).backward()
            accs.append(acc)
            rewards.append(float(reward))
            entropies.append(float(rollout.entropy[0].detach()))
        self.optimizer.step()
        self.updates += 1
        n = float(num_aggregate)
        return {"reward_mean": sum(rewards) / n, "acc_mean": sum(accs) / n, "acc_max": max(accs),
                "entropy": sum(entropies) / n, "baseline": self.baseline}

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"model": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline, "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: Mapping) -> None:
        self.controller.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = float(state["baseline"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


__all__ = ["ENASController", "ENASControllerTrainer", "enas_loss", "enas_reward", "moved_baseline"]
