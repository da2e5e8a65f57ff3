"""What a search records per epoch: the architecture distribution, the derived genotype, metrics,
and the collapse guard; saved as JSON and drawn as op weights per edge over the epochs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from ..fileio import save_figure, write_text
from ..genotype import Genotype

PARAM_FREE_OPS = {"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"}
# P-DARTS's guard allows at most two skip connections in the normal cell; more is the known
# DARTS collapse into parameter-free cells.
MAX_NORMAL_SKIPS = 2


def collapse_report(genotype: Genotype) -> dict[str, Any]:
    """Parameter-free ops and skip connections in the derived normal cell, with a warning flag."""
    ops = [e.op for e in genotype.normal.edges]
    skips = sum(op == "skip_connect" for op in ops)
    return {"param_free_ops": sum(op in PARAM_FREE_OPS for op in ops), "skip_connects": skips,
            "collapse_warning": skips > MAX_NORMAL_SKIPS}


class SearchHistory:
    """Per-epoch records, written atomically to ``history.json`` after every epoch."""

    def __init__(self, records: Optional[list] = None) -> None:
        self.records: list[dict] = list(records or [])

    def add(self, epoch: int, distribution: dict, genotype: Genotype, metrics: dict) -> dict:
        record = {"epoch": epoch, "metrics": metrics, "genotype": genotype.to_dict(),
                  "collapse": collapse_report(genotype), "distribution": distribution}
        self.records.append(record)
        return record

    def save(self, path: Union[str, Path]) -> None:
        write_text(path, json.dumps(self.records))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SearchHistory":
        path = Path(path)
        return cls(json.loads(path.read_text()) if path.is_file() else [])


def plot_history(history: SearchHistory, path: Union[str, Path], primitives: Optional[list] = None) -> Path:
    """One panel per edge (normal and reduce cells), one line per op, weight against epoch.

    DARTS/PC-DARTS histories hold ``alphas_<cell>`` (edges x ops); PARSEC's hold ``op_<cell>``
    (nodes x slots x ops) and are drawn per node slot."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not history.records:
        raise ValueError("the search history is empty; nothing to plot.")
    first = history.records[0]["distribution"]
    keys = [k for k in ("alphas_normal", "alphas_reduce", "op_normal", "op_reduce") if k in first]
    epochs = [r["epoch"] for r in history.records]
    panels = []
    for key in keys:
        series = [_flatten_edges(r["distribution"][key]) for r in history.records]
        for e in range(len(series[0])):
            panels.append((f"{key.split('_', 1)[1]}: {_panel_name(key, e)}",
                           [[s[e][o] for s in series] for o in range(len(series[0][e]))]))
    cols = 7
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.0 * rows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    lines = []
    for ax, (title, curves) in zip(axes.flat, panels):
        lines = [ax.plot(epochs, c, lw=1.2)[0] for c in curves]
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    labels = primitives or [f"op {i}" for i in range(len(lines))]
    if len(labels) != len(lines):  # PARSEC's op factors leave out 'none'
        labels = [p for p in labels if p != "none"][:len(lines)]
    fig.legend(lines, labels, loc="outside lower center", ncols=min(len(labels), 8), fontsize=8)
    fig.suptitle("architecture weights per edge over the epochs")
    return save_figure(fig, path)


def _panel_name(key: str, index: int) -> str:
    """``node 3 <- 1`` for DARTS edge ``index``; ``node 3, edge 2`` for PARSEC's node slots."""
    if key.startswith("alphas"):
        node = 0
        while index >= 2 + node:
            index -= 2 + node
            node += 1
        return f"node {node + 2} <- {index}"
    return f"node {index // 2 + 2}, edge {index % 2 + 1}"


def _flatten_edges(values: list) -> list:
    """(edges x ops) stays; (nodes x slots x ops) becomes (nodes*slots x ops)."""
    if values and isinstance(values[0][0], list):
        return [slot for node in values for slot in node]
    return values
