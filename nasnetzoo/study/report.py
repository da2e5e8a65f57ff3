"""The study's report: ``study.json`` (every figure and every cell), ``study.md`` and ``plots/``.

Per group (a strategy, or the random baseline): the proxy accuracy of its cells with every seed's
value, mean and sample std; the difference of its mean from the baseline's with a bootstrap
interval; the search and retrain cost (wall time, device-hours by device); params and MACs; how
often parameter-free ops win; how alike its seeds' cells are.  The statistics are ``stats.py``'s.
"""
from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from ..fileio import write_text
from ..genotype import Genotype
from ..search.strategies import TABLE
from . import stats
from .cell import RANDOM
from .recipe import Frozen, StudyRecipe

BASELINE_LABEL = "random (baseline)"
ACCURACY = "val_acc"   # the proxy accuracy: the retrain's last-epoch accuracy (not its best epoch's)


def label_of(group: str) -> str:
    if group == RANDOM:
        return BASELINE_LABEL
    entry = TABLE.get(group)
    return (entry.title or entry.name) if entry is not None else group


def _cost(records: Sequence[dict], stage: str) -> dict:
    seconds = [r[stage]["seconds"] for r in records]
    by_device: dict = defaultdict(float)
    for r in records:
        by_device[r[stage]["device"]] += r[stage]["seconds"] / 3600.0   # one device per run
    return {"seconds": seconds, "mean_seconds": stats.mean(seconds), "total_seconds": sum(seconds),
            "device_hours": dict(by_device)}


def group_summary(group: str, records: Sequence[dict], baseline: Optional[Sequence[float]], recipe: StudyRecipe) -> dict:
    """Every figure of one group, from the records of its finished cells."""
    records = sorted(records, key=lambda r: r["seed"])
    values = [(r["seed"], float(r["retrain"][ACCURACY])) for r in records]
    accs = [v for _, v in values]
    genotypes = [Genotype.from_dict(r["search"]["genotype"]) for r in records]
    vs_random = None
    if baseline is not None and group != RANDOM and accs and baseline:
        interval = stats.bootstrap_difference(accs, baseline, resamples=recipe.bootstrap_samples,
                                              confidence=recipe.confidence, seed=recipe.bootstrap_seed)
        vs_random = {"difference": stats.mean(accs) - stats.mean(baseline), "interval": list(interval),
                     "confidence": recipe.confidence, "resamples": recipe.bootstrap_samples}
    params = [r["retrain"]["params"] for r in records]
    macs = [r["retrain"]["macs"] for r in records]
    held_out = [(r["seed"], r["search"].get("held_out_acc")) for r in records]
    return {
        "group": group, "label": label_of(group), "cells": len(records), "seeds": [r["seed"] for r in records],
        "accuracy": {"values": [{"seed": s, "acc": a} for s, a in values], "mean": stats.mean(accs),
                     "std": stats.std(accs), "best_epoch_values": [r["retrain"].get("best_val_acc") for r in records]},
        "vs_random": vs_random,
        "search_cost": _cost(records, "search"), "retrain_cost": _cost(records, "retrain"),
        "params": {"values": params, "mean": stats.mean(params)}, "macs": {"values": macs, "mean": stats.mean(macs)},
        "profiled": records[0]["retrain"].get("profiled") if records else None,
        "collapse": stats.collapse(genotypes), "similarity": stats.similarity(genotypes),
        "search_held_out_acc": [{"seed": s, "acc": a} for s, a in held_out if a is not None],
        "genotypes": [{"seed": r["seed"], "genotype": g.to_string(),
                       "cells": Genotype(g.normal, g.reduce, g.family).to_dict()}   # the cells, not the run's paths
                      for r, g in zip(records, genotypes)],
    }


def _settings(recipe: StudyRecipe, frozen: Frozen) -> dict:
    def pick(data: dict, keys: Sequence[str]) -> dict:
        return {k: data[k] for k in keys if k in data}

    search_keys = ("dataset", "image_size", "C", "layers", "steps", "epochs", "warmup_epochs", "batch_size",
                   "max_steps_per_epoch", "partial_k", "edge_norm", "second_order", "options", "device")
    retrain_keys = ("dataset", "image_size", "model", "epochs", "batch_size", "lr", "max_steps_per_epoch", "auxiliary",
                    "drop_path", "cutout", "seed", "device")
    return {"seeds": list(recipe.seeds), "strategies": list(frozen.searches), "random_baseline": recipe.random_baseline,
            "searches": {name: pick(data, search_keys) for name, data in frozen.searches.items()},
            "retrain": pick(frozen.retrain, retrain_keys), "random_space": frozen.space,
            "bootstrap": {"resamples": recipe.bootstrap_samples, "confidence": recipe.confidence,
                          "seed": recipe.bootstrap_seed},
            "executor": recipe.executor, "workers": recipe.workers, "threads": recipe.threads}


def build_report(recipe: StudyRecipe, frozen: Frozen, cells: Sequence[dict]) -> dict:
    done = [c for c in cells if c["status"] == "done"]
    by_group: dict = defaultdict(list)
    for c in done:
        by_group[c["group"]].append(c)
    order = list(frozen.searches) + ([RANDOM] if recipe.random_baseline else [])
    baseline = [float(c["retrain"][ACCURACY]) for c in by_group.get(RANDOM, [])] if recipe.random_baseline else None
    groups = [group_summary(g, by_group[g], baseline, recipe) for g in order if by_group.get(g)]
    return {"name": recipe.name, "description": recipe.description, "settings": _settings(recipe, frozen),
            "accuracy_is": "the proxy retrain's last-epoch validation accuracy (%)",
            "groups": groups,
            "cells": [_cell_entry(c) for c in cells],
            "pending": [c["cell"] for c in cells if c["status"] == "pending"],
            "failed": [{"cell": c["cell"], **c["failure"]} for c in cells if c["status"] == "failed"]}


def _cell_entry(c: dict) -> dict:
    entry = {"cell": c["cell"], "group": c["group"], "seed": c["seed"], "status": c["status"],
             "folder": f"runs/{c['cell']}"}
    if c["status"] == "done":
        entry.update(genotype=Genotype.from_dict(c["search"]["genotype"]).to_string(),
                     search_held_out_acc=c["search"].get("held_out_acc"), search_seconds=c["search"]["seconds"],
                     search_device=c["search"]["device"], proxy_acc=c["retrain"][ACCURACY],
                     proxy_best_acc=c["retrain"].get("best_val_acc"), retrain_seconds=c["retrain"]["seconds"],
                     retrain_device=c["retrain"]["device"], params=c["retrain"]["params"], macs=c["retrain"]["macs"])
    return entry


# ---------------------------------------------------------------- markdown
def _f(value: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _hours(device_hours: dict) -> str:
    return "; ".join(f"{h:.4f} h on {d}" for d, h in device_hours.items() if round(h, 4) > 0) or "-"


def _md_settings(report: dict) -> list[str]:
    s = report["settings"]
    lines = [f"Seeds: {', '.join(map(str, s['seeds']))}. Strategies: "
             f"{', '.join(label_of(n) for n in s['strategies'])}"
             + (f", and the random baseline ({len(s['seeds'])} cells drawn uniformly from the DARTS space of "
                f"{s['random_space'].get('steps', 4)} nodes: two distinct inputs per node, each op uniform over the "
                "non-`none` ops)." if s["random_baseline"] else ".")]
    for name, keys in s["searches"].items():
        lines.append(f"- search `{name}`: " + ", ".join(f"{k}={v}" for k, v in keys.items()))
    lines.append("- proxy retrain (every cell, the same recipe and seed): "
                 + ", ".join(f"{k}={v}" for k, v in s["retrain"].items()))
    return lines


def to_markdown(report: dict, plots: dict) -> str:
    groups = report["groups"]
    conf = f"{round(100 * report['settings']['bootstrap']['confidence'])}%"
    out = [f"# Study: {report['name']}", ""]
    if report["description"]:
        out += [report["description"], ""]
    out += _md_settings(report) + [""]
    if report["failed"] or report["pending"]:
        out += [f"**Incomplete:** {len(report['failed'])} cells failed, {len(report['pending'])} not run; the "
                "figures below are over the finished cells only.", ""]
        out += [f"- {f['cell']} failed at its {f['stage']}: {f['error']}" for f in report["failed"]] + [""]
    out += ["## Proxy accuracy", "",
            f"Accuracy is {report['accuracy_is']}. Mean ± sample std (n - 1) over the search seeds; every seed's "
            f"value listed. The difference is from the random baseline's mean, with a {conf} percentile bootstrap "
            f"interval ({report['settings']['bootstrap']['resamples']} resamples of each group on its own).", "",
            "| strategy | cells | proxy acc (%) mean ± std | every seed (%) | difference from random (pp) |",
            "|---|---|---|---|---|"]
    for g in groups:
        acc = g["accuracy"]
        each = ", ".join(f"s{v['seed']}: {v['acc']:.2f}" for v in acc["values"])
        diff = "-" if g["vs_random"] is None else \
            f"{g['vs_random']['difference']:+.2f} [{g['vs_random']['interval'][0]:+.2f}, {g['vs_random']['interval'][1]:+.2f}]"
        out.append(f"| {g['label']} | {g['cells']} | {_f(acc['mean'])} ± {_f(acc['std'])} | {each} | {diff} |")
    if "accuracy" in plots:
        out += ["", f"![proxy accuracy per strategy]({plots['accuracy']})"]
    out += ["", "## Cost", "",
            "Wall time of each run as it ran here (runs in parallel share the machine), and device-hours by "
            "device (one device per run). The random baseline's cells are drawn, not searched: its cost is "
            "its retrains.", "",
            "| strategy | search per run (s) | search device-hours | proxy retrain per run (s) | retrain device-hours |",
            "|---|---|---|---|---|"]
    for g in groups:
        sc, rc = g["search_cost"], g["retrain_cost"]
        out.append(f"| {g['label']} | {_f(sc['mean_seconds'], '{:.0f}')} | {_hours(sc['device_hours'])} | "
                   f"{_f(rc['mean_seconds'], '{:.0f}')} | {_hours(rc['device_hours'])} |")
    profiled = next((g["profiled"] for g in groups if g.get("profiled")), None) or {}
    where = ", ".join(f"{k}={v}" for k, v in profiled.items())
    out += ["", "## The found cells", "",
            f"Params and MACs of each cell's network ({where}; params without the auxiliary head, MACs of one "
            "image, as `nasnetzoo info` counts them). Parameter-free ops: none, skip_connect, max_pool_3x3, "
            "avg_pool_3x3; their share of all the group's edges, and the normal cells with more than two skip "
            "connections (the DARTS collapse). Across seeds: the mean over every pair of the group's cells of the "
            "share of identical edges (same op from the same input into the same node) and of the total variation "
            "distance between the two cells' op histograms (0: the same ops). The random baseline's row is the "
            "chance level of both.", "",
            "| strategy | params (M) | MACs (M) | param-free share normal / reduce | collapsed normal cells | "
            "identical edges normal / reduce | op-histogram distance normal / reduce |",
            "|---|---|---|---|---|---|---|"]
    for g in groups:
        col, sim = g["collapse"], g["similarity"]
        params, macs = g["params"]["mean"], g["macs"]["mean"]
        out.append(
            f"| {g['label']} | {_f(None if params is None else params / 1e6, '{:.3f}')} | "
            f"{_f(None if macs is None else macs / 1e6, '{:.1f}')} | "
            f"{_f(col['param_free_share_normal'])} / {_f(col['param_free_share_reduce'])} | "
            f"{col['collapsed_normal_cells']}/{g['cells']} | "
            f"{_f(sim['normal']['identical_edges'])} / {_f(sim['reduce']['identical_edges'])} | "
            f"{_f(sim['normal']['op_histogram_distance'])} / {_f(sim['reduce']['op_histogram_distance'])} |")
    for key, title in (("cells_normal", "normal cells"), ("cells_reduce", "reduction cells")):
        if key in plots:
            out += ["", f"![{title}, one row per strategy, one column per seed]({plots[key]})"]
    out += ["", "## Every cell", "",
            "| cell | search held-out acc (%) | proxy acc (%) | best epoch's (%) | search (s) | retrain (s) | "
            "params (M) | genotype |", "|---|---|---|---|---|---|---|---|"]
    for c in report["cells"]:
        if c["status"] != "done":
            out.append(f"| {c['cell']} | {c['status']} | | | | | | |")
            continue
        out.append(f"| {c['cell']} | {_f(c['search_held_out_acc'])} | {c['proxy_acc']:.2f} | "
                   f"{_f(c['proxy_best_acc'])} | {c['search_seconds']:.0f} | {c['retrain_seconds']:.0f} | "
                   f"{c['params'] / 1e6:.3f} | `{c['genotype']}` |")
    n = len(report["settings"]["seeds"])
    out += ["", "## Reading it", "",
            f"- {n} seeds per group: the std and the bootstrap interval of {n} values are coarse (the bootstrap "
            f"resamples only the {n} values there are: {_distinct_means(n)} distinct means per group) and say "
            "nothing of seeds not run; an interval that excludes 0 is weak evidence of a difference, one that "
            "includes it says this study cannot tell.",
            "- Every cell is retrained once, with one seed: the spread mixes the search's variation with the "
            "retrain's own noise.",
            "- The proxy ranks cells as this short retrain ranks them; a full retrain may rank them otherwise.", ""]
    return "\n".join(out)


def _distinct_means(n: int) -> int:
    """How many different means a bootstrap of ``n`` values can draw: multisets of size n, C(2n - 1, n)."""
    from math import comb

    return comb(2 * n - 1, n)


def write_report(study_dir: Path, recipe: StudyRecipe, frozen: Frozen, cells: Sequence[dict]) -> dict:
    """``study.json``, ``study.md`` and the plots (left out, with a note, where matplotlib is not installed)."""
    report = build_report(recipe, frozen, cells)
    plots = {}
    with contextlib.suppress(ImportError):
        plots = _write_plots(study_dir, report)
    report["plots"] = plots
    write_text(study_dir / "study.json", json.dumps(report, indent=1, default=str) + "\n")
    write_text(study_dir / "study.md", to_markdown(report, plots))
    return report


def _write_plots(study_dir: Path, report: dict) -> dict:
    from .plots import plot_accuracy, plot_cells

    groups = report["groups"]
    if not groups:
        return {}
    folder = study_dir / "plots"
    plots = {"accuracy": "plots/accuracy.png"}
    plot_accuracy([{"label": g["label"], "values": [(v["seed"], v["acc"]) for v in g["accuracy"]["values"]]}
                   for g in groups], folder / "accuracy.png", baseline_label=BASELINE_LABEL)
    cells = [{"label": g["label"], "cells": [(e["seed"], Genotype.from_dict(e["cells"])) for e in g["genotypes"]]}
             for g in groups]
    for cell in ("normal", "reduce"):
        plot_cells(cells, cell, folder / f"cells_{cell}.png", f"{cell} cells found, one row per strategy, one column "
                   "per seed")
        plots[f"cells_{cell}"] = f"plots/cells_{cell}.png"
    return plots


__all__ = ["BASELINE_LABEL", "build_report", "group_summary", "to_markdown", "write_report"]
