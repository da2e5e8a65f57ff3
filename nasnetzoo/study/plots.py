"""The study's pictures: proxy accuracy per strategy (every seed a dot over a box), and the cells
each strategy found, side by side (``nasnetzoo.plot.plot_cell_grid``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..fileio import save_figure


def plot_accuracy(groups: Sequence[dict], path: Path, *, baseline_label: str = "") -> Path:
    """A box per group (for two values or more) with every seed's value as a labelled dot; the
    baseline's mean as a dashed line across.  ``groups``: ``{"label", "values": [(seed, acc)]}``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.5 * len(groups) + 1.5), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, group in enumerate(groups):
        values = [acc for _, acc in group["values"]]
        if len(values) >= 2:
            ax.boxplot([values], positions=[i], widths=0.5, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": f"C{i % 10}", "alpha": 0.25}, medianprops={"color": f"C{i % 10}"})
        n = len(values)
        for k, (seed, acc) in enumerate(group["values"]):
            x = i + (k - (n - 1) / 2) * min(0.12, 0.5 / max(n, 1))   # spread evenly: equal values stay apart
            ax.plot([x], [acc], "o", color=f"C{i % 10}", ms=6, zorder=3, markeredgecolor="black", markeredgewidth=0.5)
            ax.annotate(f"s{seed}", (x, acc), textcoords="offset points", xytext=(5, 0), fontsize=7, va="center")
        if group["label"] == baseline_label and values:
            mean = sum(values) / len(values)
            ax.axhline(mean, color="grey", ls="--", lw=1, zorder=1)
            ax.annotate(f"{baseline_label} mean {mean:.2f}%", (len(groups) - 0.5, mean), textcoords="offset points",
                        xytext=(0, 3), fontsize=7, ha="right", color="grey")
    ax.set_xticks(range(len(groups)), [g["label"] for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("proxy accuracy after the retrain (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("proxy accuracy of the found cells, every search seed (sN: seed N)", fontsize=10)
    return save_figure(fig, path, dpi=150)


def plot_cells(groups: Sequence[dict], cell: str, path: Path, title: str) -> Path:
    """``groups``: ``{"label", "cells": [(seed, genotype)]}``; one row per group, one panel per seed."""
    from ..plot import plot_cell_grid

    rows = [(g["label"], [(f"seed {seed}", genotype) for seed, genotype in g["cells"]]) for g in groups if g["cells"]]
    plot_cell_grid(rows, cell, path, title=title)
    return path


__all__ = ["plot_accuracy", "plot_cells"]
