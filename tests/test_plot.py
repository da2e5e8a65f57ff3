"""nasnetzoo.plot: every published genotype draws, files come out in each format, bad input is
refused with a NasNetZooError."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("matplotlib")  # the optional 'plot' extra
from matplotlib.figure import Figure  # noqa: E402

from nasnetzoo.errors import ConfigError, NasNetZooError  # noqa: E402
from nasnetzoo.genotype import Genotype  # noqa: E402
from nasnetzoo.ops.registry import op_names, register_op, unregister_op  # noqa: E402
from nasnetzoo.plot import (  # noqa: E402
    SAVE_FORMATS, layout_cell, op_kind, plot_cell, plot_genotype)

GENOTYPE_DIR = Path(__file__).resolve().parents[1] / "genotypes"
GENOTYPE_FILES = sorted(GENOTYPE_DIR.glob("*.yaml"))
CELLS = ("normal", "reduce")


@pytest.fixture(scope="module", autouse=True)
def known_ops():
    """Plotting needs no op implementations, but loading a genotype validates its op names
    against the registry: stand-in factories cover any op the registry does not (yet) have,
    and are removed afterwards."""
    added = []
    for path in GENOTYPE_FILES:
        data = yaml.safe_load(path.read_text())
        family = data.get("family", "darts")
        for cell in CELLS:
            for node in data[cell]["nodes"]:
                for op, _ in node:
                    if op not in op_names(family):
                        register_op(op, lambda *args, **kwargs: None, family=family)
                        added.append((op, family))
    yield
    for op, family in added:
        unregister_op(op, family=family)


def _load(name: str) -> Genotype:
    return Genotype.from_file(GENOTYPE_DIR / f"{name}.yaml")


def _svg_texts(path: Path) -> list[str]:
    return re.findall(r"<text\b[^>]*>([^<]*)</text>", path.read_text())


def test_genotype_files_exist():
    assert len(GENOTYPE_FILES) >= 2


@pytest.mark.parametrize("path", GENOTYPE_FILES, ids=lambda p: p.stem)
def test_every_genotype_plots_both_cells(path: Path, tmp_path: Path):
    genotype = Genotype.from_file(path)
    for cell in CELLS:
        png, svg = tmp_path / f"{cell}.png", tmp_path / f"{cell}.svg"
        fig = plot_cell(genotype, cell, png)
        assert isinstance(fig, Figure)
        assert fig.canvas.manager is None  # not registered with pyplot: nothing left open
        plot_cell(genotype, cell, svg)
        assert png.read_bytes().startswith(b"\x89PNG")
        assert svg.stat().st_size > 0
        texts = _svg_texts(svg)
        for edge in genotype.cell(cell).edges:
            assert edge.op in texts, f"{path.name} {cell}: op {edge.op!r} missing from the SVG"
        assert f"{genotype.name} — {cell} cell" in texts


def test_plot_genotype_draws_both_cells(tmp_path: Path):
    genotype = _load("nasnet_a")
    out = tmp_path / "sub" / "both.pdf"
    fig = plot_genotype(genotype, out)
    assert isinstance(fig, Figure)
    assert out.read_bytes().startswith(b"%PDF")
    svg = tmp_path / "both.svg"
    plot_genotype(genotype, svg, title="custom title")
    texts = _svg_texts(svg)
    assert "custom title" in texts
    assert {"normal cell", "reduce cell"} <= set(texts)


def test_no_path_returns_figure_and_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = plot_cell(_load("darts_v2"), "reduce", title="t")
    assert isinstance(fig, Figure) and fig.texts[0].get_text() == "t"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["cell.jpg", "cell", "cell.svgz", "cell.png.txt"])
def test_bad_suffix_raises_config_error(name: str, tmp_path: Path):
    genotype = _load("pcdarts_cifar")
    with pytest.raises(ConfigError) as info:
        plot_cell(genotype, "normal", tmp_path / name)
    message = str(info.value)
    assert all(fmt in message for fmt in SAVE_FORMATS)
    assert name in message
    with pytest.raises(ConfigError):
        plot_genotype(genotype, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cell", ["reduction", "Normal", "", "concat"])
def test_bad_cell_name_raises(cell: str):
    with pytest.raises(NasNetZooError) as info:
        plot_cell(_load("pcdarts_cifar"), cell)
    assert repr(cell) in str(info.value) and "'normal'" in str(info.value)


def test_layout_is_a_left_to_right_layering():
    genotype = _load("pcdarts_cifar")
    cell = genotype.reduce
    layout = layout_cell(cell, genotype.family)
    nodes = layout.nodes
    out = nodes[cell.num_states]
    assert nodes[0].x == nodes[1].x == min(n.x for n in nodes.values())
    assert out.x == max(n.x for n in nodes.values()) and out.role == "output"
    for k, node in enumerate(cell.nodes):
        for edge in node:
            assert nodes[edge.input].x < nodes[k + 2].x
    concat = [e for e in layout.edges if e.kind == "concat"]
    assert sorted(e.src for e in concat) == sorted(cell.concat)
    assert len({e.end for e in concat}) == len(concat)  # one port each at the output
    assert [e.op for e in layout.edges if e.op] == [e.op for e in cell.edges]


def test_parallel_edges_are_fanned_apart():
    genotype = _load("nasnet_a")  # normal node 5 reads avg_pool_3x3 twice from state 1
    layout = layout_cell(genotype.normal, genotype.family)
    parallel = [e for e in layout.edges if e.src == 1 and e.dst == 5]
    assert len(parallel) == 2
    assert abs(parallel[0].rad - parallel[1].rad) >= 0.2


def test_input_labels_follow_the_family():
    darts, nasnet = _load("darts_v2"), _load("nasnet_a")
    d = layout_cell(darts.normal, darts.family).nodes
    n = layout_cell(nasnet.normal, nasnet.family).nodes
    assert (d[0].label, d[1].label) == (r"$c_{k-2}$", r"$c_{k-1}$")
    assert (n[0].label, n[1].label) == (r"$h_{i}$", r"$h_{i-1}$")


@pytest.mark.parametrize("op, family, kind", [
    ("sep_conv_3x3", "darts", "conv"), ("dil_conv_5x5", "darts", "conv"),
    ("separable_7x7_2", "nasnet", "conv"), ("1x7_7x1", "nasnet", "conv"),
    ("max_pool_3x3", "darts", "pool"), ("avg_pool_3x3", "nasnet", "pool"),
    ("skip_connect", "darts", "skip"), ("none", "nasnet", "skip"), ("none", "darts", "zero"),
])
def test_op_kinds(op: str, family: str, kind: str):
    assert op_kind(op, family) == kind


def test_concat_nodes_are_marked_and_explained_in_the_legend():
    data = Genotype.from_file(GENOTYPE_DIR / "nasnet_a.yaml").to_dict()
    data["normal"]["combine"] = ["add", "concat", "add", "add", "add"]
    genotype = Genotype.from_dict(data)
    labels = {spot.key: spot.label for spot in layout_cell(genotype.normal, "nasnet").nodes.values()}
    assert labels[3].endswith("\u2225") and not labels[2].endswith("\u2225")

    def legend_texts(fig: Figure) -> list[str]:
        return [t.get_text() for legend in fig.legends for t in legend.get_texts()]

    assert "node concatenates its two ops" in legend_texts(plot_cell(genotype, "normal"))
    assert "node concatenates its two ops" not in legend_texts(plot_cell(genotype, "reduce"))
    assert "node concatenates its two ops" in legend_texts(plot_genotype(genotype))


def test_search_history_plot_marks_epochs_and_kept_edges(tmp_path: Path, monkeypatch):
    """alphas.png: 1-based epochs, a marker on every value (a 1-epoch search draws dots, not empty
    panels), labelled axes, and the final genotype's edges in bold naming the op kept."""
    import torch

    from nasnetzoo.search import history as history_module
    from nasnetzoo.search.history import SearchHistory, plot_history

    import nasnetzoo

    genotype = nasnetzoo.get_genotype("darts_v2")
    primitives = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                  "dil_conv_3x3", "dil_conv_5x5"]
    alphas = torch.softmax(torch.randn(14, 8, generator=torch.Generator().manual_seed(0)), -1).tolist()
    history = SearchHistory()
    history.add(0, {"alphas_normal": alphas, "alphas_reduce": alphas}, genotype, {})
    drawn = {}
    monkeypatch.setattr(history_module, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plot_history(history, tmp_path / "alphas.png", primitives)
    axes = [ax for ax in drawn["fig"].axes if ax.get_visible() and ax.lines]
    assert len(axes) == 28
    assert all(line.get_marker() == "o" and list(line.get_xdata()) == [1] for ax in axes for line in ax.lines)
    assert all(list(ax.get_xticks()) == [1] for ax in axes)
    assert sum(ax.get_xlabel() == "epoch" for ax in axes) == 7  # the bottom panel of each column
    kept = {ax.get_title() for ax in axes if ax.title.get_fontweight() == "bold"}
    assert len(kept) == 16
    node3 = genotype.normal.nodes[1]  # node 3's two edges: their panels name the op kept
    for edge in node3:
        assert f"normal: node 3 <- {edge.input}\nkept: {edge.op}" in kept
    thick = [line for ax in axes for line in ax.lines if line.get_linewidth() > 2]
    assert len(thick) == 16



@pytest.mark.parametrize("key", ["tau", "temperature"])
def test_search_history_plot_draws_the_sampling_temperature_on_its_own_axis(key, tmp_path: Path, monkeypatch):
    """GDAS's tau (10 -> 0.1) and SNAS's temperature get a panel of their own, beside the op weights'
    [0, 1] panels, not on their shared y axis."""
    import torch

    import nasnetzoo
    from nasnetzoo.search import history as history_module
    from nasnetzoo.search.history import SearchHistory, plot_history

    alphas = torch.softmax(torch.randn(14, 8, generator=torch.Generator().manual_seed(0)), -1).tolist()
    history = SearchHistory()
    for epoch, value in enumerate((10.0, 5.05, 0.1)):
        history.add(epoch, {"alphas_normal": alphas, "alphas_reduce": alphas, key: value},
                    nasnetzoo.get_genotype("darts_v2"), {})
    drawn = {}
    monkeypatch.setattr(history_module, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plot_history(history, tmp_path / "alphas.png")
    axes = [ax for ax in drawn["fig"].axes if ax.get_visible() and ax.lines]
    assert len(axes) == 29
    (panel,) = [ax for ax in axes if key in ax.get_title() or "tau" in ax.get_title()]
    assert list(panel.lines[0].get_ydata()) == [10.0, 5.05, 0.1] and panel.get_ylim()[1] > 9
    assert all(ax.get_ylim()[1] < 1.5 for ax in axes if ax is not panel)

def test_latency_plot_wraps_into_a_grid_with_labels_apart(tmp_path: Path, monkeypatch):
    """The mobile report's figure: two panels to a row (not one row per runtime), and the names of
    networks of similar MACs and latency stacked apart, not on top of one another."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from nasnetzoo.export import bench

    runtimes = ["onnxruntime", "executorch", "litert", "openvino", "torch"]
    rows = [bench.Row(f"net_{i}", "zoo", rt, 1, "ok", median_ms=5.0 + 0.05 * i, macs=(560 + 3 * i) * 10 ** 6)
            for rt in runtimes for i in range(6)]
    rows += [bench.Row("resnet18", "baseline", rt, 1, "ok", median_ms=20.0, macs=1814 * 10 ** 6) for rt in runtimes]
    drawn = {}
    monkeypatch.setattr(bench, "save_figure_atomic", lambda fig, path, **kw: drawn.setdefault("fig", fig) and path)
    bench.plot_latency_vs_macs(rows, tmp_path / "p.png")
    fig = drawn["fig"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5 and fig.get_figwidth() <= 12
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 2  # two columns
    renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in panels:
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text, not its leader
        assert len(boxes) == 7
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
