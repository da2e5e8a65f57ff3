"""The rewards plot of a sampled search: every child's reward, the best so far, and the proposer's
per-update mean and baseline when its metrics records carry them (the RL controller's)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from ...fileio import save_figure

PathLike = Union[str, Path]


def plot_rewards(children: Sequence[dict], path: PathLike, updates: Sequence[dict] = (), *,
                 title: str = "reward over time", mean_label: str = "mean per update") -> Path:
    """Reward of every child against its number, the best so far, and (``updates``: records with
    ``children`` and ``reward_mean``) their mean (``mean_label``) and the baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ordered = sorted(children, key=lambda c: c["child"])
    index = [c["child"] for c in ordered]
    reward = [100 * c["reward"] for c in ordered]
    ax.scatter(index, reward, s=10, alpha=0.5, color="#4c72b0", label="child")
    best, running = [], float("-inf")
    for r in reward:
        running = max(running, r)
        best.append(running)
    ax.plot(index, best, color="#c44e52", linewidth=1.5, label="best so far")
    updates = [u for u in updates if "reward_mean" in u and "children" in u]
    if updates:
        ends = [u["children"] - 1 for u in updates]
        ax.plot(ends, [100 * u["reward_mean"] for u in updates], color="#55a868", linewidth=1.5, marker="o",
                markersize=3, label=mean_label)
        base = [(e, 100 * u["baseline"]) for e, u in zip(ends, updates) if u.get("baseline") is not None]
        if base:
            ax.plot(*zip(*base), color="#8172b2", linestyle="--", linewidth=1.2, label="baseline (EMA)")
    ax.set_xlabel("child")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["plot_rewards"]
