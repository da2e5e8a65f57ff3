"""PNAS's surrogate: an ensemble of small networks that reads a cell and predicts its reward.

Liu et al. (ECCV 2018), Sec. 3.3: the predictor must read cells of any size (it is trained on
b-block cells and asked about (b+1)-block ones), so the paper's is an LSTM over the cell's tokens,
``input_a, input_b, op_a, op_b`` per block, with one embedding table for the inputs and another for
the ops; its final hidden state goes through a linear layer and a sigmoid to give the accuracy.
The paper also builds an MLP that embeds the four tokens of a block, concatenates them, and averages
over the blocks (a fixed-size vector for any b).  Both are here (``kind``: ``lstm`` | ``mlp``), as
an ensemble of ``members`` copies, each fitted to its own random share (``subset``) of the cells
trained so far; the prediction is the members' mean.

From the paper as we could check it (two write-ups of it, not its text): the LSTM, its token
sequence, the two embedding tables, the sigmoid output, the MLP's block averaging.  Taken from
the task description, not checked: an ensemble of 5.  Our own choices, not checked against the
paper: the L1 loss, Adam with learning rate 0.01, embedding and hidden size 100, each member on 4/5
of the data, the number of epochs per fit, and that a refit continues training the members (warm
start, "finetune") rather than starting them afresh.

:func:`spearman` is the rank correlation the search logs at each stage (ties get average ranks).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

KINDS = ("lstm", "mlp")


@dataclass(frozen=True)
class PredictorConfig:
    kind: str = "lstm"          # lstm (the paper's) | mlp
    members: int = 5            # ensemble size
    embedding: int = 100
    hidden: int = 100
    lr: float = 0.01            # Adam
    epochs: int = 20            # passes over each member's share, per fit
    batch_size: int = 64
    subset: float = 0.8         # each member's share of the trained cells
    weight_decay: float = 0.0


def _token_batch(tokens: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(padded [n, 4 * max_b] long, blocks [n] long)``; padding is 0 and masked by the models."""
    if not tokens:
        raise ValueError("no cells to encode")
    width = max(len(t) for t in tokens)
    out = torch.zeros(len(tokens), width, dtype=torch.long)
    for i, t in enumerate(tokens):
        out[i, :len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    return out, torch.as_tensor([len(t) // 4 for t in tokens], dtype=torch.long)


class _Embed(nn.Module):
    """Embeds token slots 0-1 of each block with the input table and slots 2-3 with the op table."""

    def __init__(self, num_inputs: int, num_ops: int, dim: int) -> None:
        super().__init__()
        self.inputs = nn.Embedding(num_inputs, dim)
        self.ops = nn.Embedding(num_ops, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:   # [n, 4b] -> [n, 4b, dim]
        slot = torch.arange(tokens.shape[1], device=tokens.device) % 4
        is_op = (slot >= 2).expand_as(tokens)
        ins = self.inputs(torch.where(is_op, torch.zeros_like(tokens), tokens))
        ops = self.ops(torch.where(is_op, tokens, torch.zeros_like(tokens)))
        return torch.where(is_op.unsqueeze(-1), ops, ins)


class LSTMPredictor(nn.Module):
    def __init__(self, num_inputs: int, num_ops: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.embed = _Embed(num_inputs, num_ops, embedding)
        self.lstm = nn.LSTM(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        # The state after the cell's last real token; padding comes after it, so it cannot leak in.
        last = (4 * blocks - 1).clamp(min=0)
        final = out[torch.arange(out.shape[0]), last]
        return torch.sigmoid(self.head(final)).squeeze(-1)


class MLPPredictor(nn.Module):
    def __init__(self, num_inputs: int, num_ops: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.embed = _Embed(num_inputs, num_ops, embedding)
        self.net = nn.Sequential(nn.Linear(4 * embedding, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        n, width = tokens.shape
        per_block = self.embed(tokens).reshape(n, width // 4, -1)            # [n, max_b, 4 * dim]
        mask = (torch.arange(width // 4).unsqueeze(0) < blocks.unsqueeze(1)).to(per_block.dtype)
        mean = (per_block * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return torch.sigmoid(self.net(mean)).squeeze(-1)


class EnsemblePredictor:
    """``members`` predictors of one kind, their Adam states and one generator for their data shares."""

    def __init__(self, num_inputs: int, num_ops: int, config: PredictorConfig = PredictorConfig(), seed: int = 0) -> None:
        if config.kind not in KINDS:
            raise ValueError(f"predictor kind {config.kind!r} is not one of {', '.join(KINDS)}")
        self.config, self.num_inputs, self.num_ops = config, int(num_inputs), int(num_ops)
        model = LSTMPredictor if config.kind == "lstm" else MLPPredictor
        self.members: list[nn.Module] = []
        for m in range(config.members):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 7919 + m)   # each member's initial weights, independent of the global RNG
                self.members.append(model(self.num_inputs, self.num_ops, config.embedding, config.hidden))
        self.optimizers = [torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
                           for net in self.members]
        self.generator = torch.Generator().manual_seed(seed)
        self.fits = 0

    # ------------------------------------------------------------------ fitting and predicting
    def fit(self, tokens: Sequence[Sequence[int]], rewards: Sequence[float]) -> dict:
        """Train every member ``epochs`` passes over its own random share of ``(tokens, rewards)``
        with the L1 loss; returns the ensemble's mean absolute error and rank correlation on all of
        them after the fit."""
        if len(tokens) != len(rewards) or not tokens:
            raise ValueError(f"fit needs as many rewards as cells ({len(tokens)} cells, {len(rewards)} rewards)")
        x, blocks = _token_batch(tokens)
        y = torch.as_tensor(list(rewards), dtype=torch.float32)
        n = len(y)
        share = max(1, min(n, int(math.ceil(self.config.subset * n))))
        for net, optimizer in zip(self.members, self.optimizers):
            rows = torch.randperm(n, generator=self.generator)[:share]
            net.train()
            for _ in range(self.config.epochs):
                order = rows[torch.randperm(share, generator=self.generator)]
                for start in range(0, share, self.config.batch_size):
                    batch = order[start:start + self.config.batch_size]
                    loss = (net(x[batch], blocks[batch]) - y[batch]).abs().mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        self.fits += 1
        fitted = self.predict(tokens)
        rho = spearman(fitted.tolist(), y.tolist())
        # fit_spearman: on the cells it was fitted to; the search logs the one on unseen cells beside it
        return {"fit_mae": float((fitted - y).abs().mean()), "fit_spearman": None if math.isnan(rho) else rho,
                "fit_cells": n, "member_cells": share}

    @torch.no_grad()
    def predict(self, tokens: Sequence[Sequence[int]], batch_size: int = 4096) -> torch.Tensor:
        """The members' mean prediction for each cell (float32, in [0, 1])."""
        out = []
        for start in range(0, len(tokens), batch_size):
            x, blocks = _token_batch(tokens[start:start + batch_size])
            preds = []
            for net in self.members:
                net.eval()
                preds.append(net(x, blocks))
            out.append(torch.stack(preds).mean(0))
        return torch.cat(out) if out else torch.zeros(0)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"config": dataclasses.asdict(self.config),
                "members": [net.state_dict() for net in self.members],
                "optimizers": [opt.state_dict() for opt in self.optimizers],
                "generator": self.generator.get_state(), "fits": self.fits}

    def load_state_dict(self, state: dict) -> None:
        if len(state["members"]) != len(self.members):
            raise ValueError(f"the saved ensemble has {len(state['members'])} members; this one {len(self.members)}")
        for net, saved in zip(self.members, state["members"]):
            net.load_state_dict(saved)
        for opt, saved in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)
        self.generator.set_state(state["generator"])
        self.fits = int(state["fits"])


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties sharing the average of the ranks they span."""
    values = values.to(torch.float64)
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    sorted_values = values[order]
    i, n = 0, len(values)
    while i < n:
        j = i
        while j + 1 < n and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (NaN when either
    side is constant or there are fewer than two pairs)."""
    x = torch.as_tensor(list(predicted), dtype=torch.float64)
    y = torch.as_tensor(list(actual), dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs pairs: {len(x)} predictions, {len(y)} rewards")
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / denom if denom > 0 else float("nan")


__all__ = ["EnsemblePredictor", "KINDS", "LSTMPredictor", "MLPPredictor", "PredictorConfig", "spearman"]
