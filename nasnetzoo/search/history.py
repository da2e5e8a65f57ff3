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
# More parameter-free ops than this among the normal cell's 8 and the cell has almost nothing left
# to learn with: the architecture chose before the convolutions had trained (too short a warm-up).
MAX_NORMAL_PARAM_FREE = 6
# A sampling temperature a strategy logs with its distribution (one number per epoch), drawn in a
# panel of its own: GDAS's Gumbel-softmax tau, SNAS's temperature, P-DARTS's skip_connect dropout.
SCHEDULES = {"tau": "GDAS's Gumbel-softmax tau", "temperature": "SNAS's temperature",
             "skip_dropout": "P-DARTS's skip_connect dropout"}


def collapse_report(genotype: Genotype) -> dict[str, Any]:
    """Parameter-free ops and skip connections in the derived normal cell, with the two warning flags:
    ``collapse_warning`` (more than :data:`MAX_NORMAL_SKIPS` skips) and ``param_free_warning`` (more
    than :data:`MAX_NORMAL_PARAM_FREE` parameter-free ops)."""
    ops = [e.op for e in genotype.normal.edges]
    skips = sum(op == "skip_connect" for op in ops)
    free = sum(op in PARAM_FREE_OPS for op in ops)
    return {"param_free_ops": free, "normal_ops": len(ops), "skip_connects": skips,
            "collapse_warning": skips > MAX_NORMAL_SKIPS, "param_free_warning": free > MAX_NORMAL_PARAM_FREE}


def collapse_warning(report: dict[str, Any]) -> Optional[str]:
    """``WARNING: ...`` with the reason the normal cell looks collapsed, or None (a report of
    :func:`collapse_report`; one from before ``param_free_warning`` existed is read too)."""
    reasons = []
    if report.get("param_free_warning"):
        reasons.append(f"{report['param_free_ops']} of the normal cell's {report.get('normal_ops', 8)} ops are "
                       f"parameter-free (more than {MAX_NORMAL_PARAM_FREE}: the cell collapsed, the architecture "
                       "chose before the convolutions had trained); try more warmup_epochs or epochs")
    if report.get("collapse_warning"):
        reasons.append(f"{report['skip_connects']} skip connections in the normal cell (the DARTS collapse); "
                       "consider early stopping or fewer epochs")
    return "WARNING: " + "; and ".join(reasons) if reasons else None


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

    Epochs are drawn 1-based (the run's ``epoch_001.yaml`` is epoch 1), every value with a marker
    (a 1-epoch search is one dot per op, not an empty panel).  The edges the last genotype keeps
    are marked: a bold title naming the kept op, whose line is drawn thicker.
    DARTS/PC-DARTS histories hold ``alphas_<cell>`` (edges x ops); PARSEC's hold ``op_<cell>``
    (nodes x slots x ops) and are drawn per node slot.  A temperature logged beside them (GDAS's
    ``tau``, SNAS's ``temperature``: :data:`SCHEDULES`) gets a last panel, with its own y axis.
    A history whose distribution names a ``stage`` (P-DARTS) gets a dashed line where each stage
    starts; a weight logged as null (an op the stage no longer has) leaves a gap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not history.records:
        raise ValueError("the search history is empty; nothing to plot.")
    first = history.records[0]["distribution"]
    keys = [k for k in ("alphas_normal", "alphas_reduce", "op_normal", "op_reduce") if k in first]
    epochs = [r["epoch"] + 1 for r in history.records]
    num_ops = len(_flatten_edges(first[keys[0]])[0]) if keys else 0
    labels = list(primitives or [f"op {i}" for i in range(num_ops)])
    if len(labels) != num_ops:  # PARSEC's op factors leave out 'none'
        labels = [p for p in labels if p != "none"][:num_ops]
    kept = _kept_edges(history.records[-1].get("genotype"))
    panels = []
    for key in keys:
        cell = key.split("_", 1)[1]
        series = [_flatten_edges(r["distribution"][key]) for r in history.records]
        for e in range(len(series[0])):
            panels.append((cell, _panel_name(key, e), kept.get((cell, _panel_node_input(key, e))),
                           [[s[e][o] for s in series] for o in range(len(series[0][e]))]))
    schedule = next((k for k in SCHEDULES if k in first), None)
    records = history.records
    stage_starts = [r["epoch"] + 1 - 0.5 for prev, r in zip(records, records[1:])
                    if "stage" in r["distribution"] and r["distribution"]["stage"] != prev["distribution"].get("stage")]
    count = len(panels) + (schedule is not None)
    cols = min(7, max(count, 1))
    rows = -(-count // cols)
    fig = Figure(figsize=(2.6 * cols, 2.0 * rows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for ax, (cell, name, kept_op, curves) in zip(axes.flat, panels):
        for o, curve in enumerate(curves):
            chosen = kept_op is not None and o < len(labels) and labels[o] == kept_op
            ax.plot(epochs, curve, color=f"C{o % 10}", lw=2.6 if chosen else 1.0, marker="o",
                    ms=4 if chosen else 2.5, zorder=3 if chosen else 2)
        title = f"{cell}: {name}" + (f"\nkept: {kept_op}" if kept_op else "")
        ax.set_title(title, fontsize=8, fontweight="bold" if kept_op else "normal")
        if kept_op:
            for side in ax.spines.values():
                side.set_linewidth(1.6)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for x in stage_starts:
            ax.axvline(x, color="0.4", ls="--", lw=0.8)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if schedule is not None:   # its own y axis: the panels share the op weights' [0, 1]
        slot = list(axes.flat)[len(panels)]
        ax = fig.add_subplot(slot.get_subplotspec())
        ax.plot(epochs, [r["distribution"][schedule] for r in history.records], color="k", marker="o", ms=3)
        ax.set_title(f"{SCHEDULES[schedule]}\nper epoch", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for x in stage_starts:
            ax.axvline(x, color="0.4", ls="--", lw=0.8)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    if len(epochs) == 1:
        for ax in axes.flat:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    handles = [Line2D([], [], color=f"C{o % 10}", marker="o", ms=3, lw=1.2) for o in range(len(labels))]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 8), fontsize=8)
    for c in range(cols):  # the lowest visible panel of each column carries the epoch axis
        visible = [r for r in range(rows) if axes[r][c].get_visible()]
        if visible:
            axes[visible[-1]][c].set_xlabel("epoch", fontsize=8)
            axes[visible[-1]][c].tick_params(labelbottom=True)
    fig.supylabel("op weight (softmax over the edge's ops)", fontsize=9)
    fig.suptitle("architecture weights per edge over the epochs (bold: the edges the final genotype keeps, "
                 "the kept op drawn thick" + ("; dashed: a new stage" if stage_starts else "") + ")", fontsize=10)
    return save_figure(fig, path)


def _kept_edges(genotype_data: Any) -> dict[tuple[str, tuple[int, int]], str]:
    """``{(cell, (node, input)): op}`` for the edges a genotype keeps (nothing if it cannot be read)."""
    try:
        genotype = Genotype.from_dict(genotype_data)
    except Exception:  # an old or hand-edited history: the plot is still drawn, unmarked
        return {}
    kept = {}
    for cell in ("normal", "reduce"):
        for b, node in enumerate(getattr(genotype, cell).nodes):
            for slot, edge in enumerate(node):
                kept[(cell, (b + 2, edge.input))] = edge.op
                kept[(cell, (b + 2, -1 - slot))] = edge.op  # PARSEC's panels are node slots
    return kept


def _panel_node_input(key: str, index: int) -> tuple[int, int]:
    """The ``(node, input)`` of DARTS edge ``index``; ``(node, -1 - slot)`` for PARSEC's slots."""
    if key.startswith("alphas"):
        node = 0
        while index >= 2 + node:
            index -= 2 + node
            node += 1
        return node + 2, index
    return index // 2 + 2, -1 - index % 2


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
