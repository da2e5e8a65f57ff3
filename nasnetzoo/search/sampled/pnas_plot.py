"""The PNAS plot of its central claim: each stage's predicted rewards (made before the cells were
trained) against the rewards they then got, with the stage's Spearman rank correlation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from ...fileio import save_figure

PathLike = Union[str, Path]
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860")


def plot_predictions(trained: Sequence[dict], stages: Sequence[dict], path: PathLike) -> Path:
    """A scatter of predicted against trained reward (in %) per stage after the first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rho = {s["stage"]: s.get("spearman") for s in stages}
    values = []
    for k, stage in enumerate(sorted({t["stage"] for t in trained if t.get("predicted") is not None})):
        mine = [t for t in trained if t["stage"] == stage and t.get("predicted") is not None]
        x = [100 * t["predicted"] for t in mine]
        y = [100 * t["reward"] for t in mine]
        values += x + y
        r = rho.get(stage)
        label = f"b={stage}: {len(mine)} cells, Spearman " + ("n/a" if r is None else f"{r:.2f}")
        ax.scatter(x, y, s=14, alpha=0.7, color=COLOURS[k % len(COLOURS)], label=label)
    if values:
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="#888888", linewidth=0.8, linestyle="--", label="predicted = trained")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no stage after the first has finished", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("predicted held-out accuracy (%), before training")
    ax.set_ylabel("trained held-out accuracy (%)")
    ax.set_title("PNAS: the predictor on cells it had not seen")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["plot_predictions"]
