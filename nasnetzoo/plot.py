"""Cell diagrams with matplotlib alone (no graphviz).

``plot_cell(genotype, "normal")`` draws one cell: the two inputs on the left, the intermediate
nodes in columns by dependency depth (a node sits one column right of its deepest input), the
concatenated output on the right.  Each op edge is an arrow coloured by the op's kind (conv, pool,
skip/identity, zero) and labelled with the op name; grey dashed arrows feed the output concat.
``plot_genotype(genotype)`` draws both cells side by side.  Intermediate nodes carry their state
index (node k is state k + 2), the number the genotype's edges use to refer to them.

The module is split into a pure *layout* step (columns, rows, edge curvature; data coordinates
in inches) and a *drawing* step.  Figures are built on the Agg canvas directly, never through
``pyplot``, so no global backend is switched, nothing is displayed, and a figure is freed as soon
as the caller drops it (plotting hundreds of cells does not accumulate open figures).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

try:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
except ImportError as err:  # matplotlib is the optional 'plot' extra
    raise ImportError("nasnetzoo.plot needs matplotlib: pip install 'nasnetzoo[plot]'") from err

from .errors import ConfigError, describe_os_error
from .genotype import CELL_TYPES, Cell, Genotype

__all__ = ["plot_cell", "plot_cell_grid", "plot_genotype", "layout_cell", "op_kind", "SAVE_FORMATS"]

SAVE_FORMATS = (".svg", ".png", ".pdf")

# ------------------------------------------------------------------ style
OP_KIND_STYLE = {  # kind -> (legend label, colour, line style)
    "conv": ("conv", "#1f5fa8", "-"),
    "pool": ("pool", "#2e8b3a", "-"),
    "skip": ("skip / identity", "#7b3fa0", "-"),
    "zero": ("zero", "#c62828", ":"),
    "other": ("other", "#8c564b", "-"),
}
CONCAT_STYLE = ("concat", "#8a8a8a", "--")
NODE_FILL = {"input": "#cfe8cf", "node": "#d6e4f5", "output": "#fbe3a6"}

NODE_RADIUS = 0.30    # inches (layout units are inches: equal aspect, one unit = one inch)
COLUMN_GAP = 2.5      # horizontal distance between dependency columns
ROW_GAP = 1.05        # vertical distance between nodes of one column
PORT_GAP = 0.24       # vertical distance between the concat arrows' ends at the output
LABEL_FONTSIZE = 7
NODE_FONTSIZE = 11
PNG_DPI = 150

_IDENTITY_OPS = {"skip_connect", "identity"}
_ZERO_OPS = {"zero"}


def op_kind(op: str, family: str = "darts") -> str:
    """'conv', 'pool', 'skip', 'zero' or 'other' for an op name of ``family``.

    ``none`` is the zero op in DARTS but the identity in TF-slim NASNet.
    """
    name = op.lower()
    if name == "none":
        return "skip" if family == "nasnet" else "zero"
    if name in _ZERO_OPS:
        return "zero"
    if name in _IDENTITY_OPS:
        return "skip"
    if "pool" in name:
        return "pool"
    if "conv" in name or "separable" in name or any(c.isdigit() for c in name.split("_")[0]):
        return "conv"  # sep_conv_3x3, dil_conv_5x5, separable_5x5_2, conv_7x1_1x7, 1x7_7x1, ...
    return "other"


def state_label(state: int, family: str) -> str:
    """Mathtext label of cell state ``state`` (inputs are named by family)."""
    if state == 0:
        return r"$h_{i}$" if family == "nasnet" else r"$c_{k-2}$"
    if state == 1:
        return r"$h_{i-1}$" if family == "nasnet" else r"$c_{k-1}$"
    return str(state)


OUTPUT_LABEL = r"$c_{k}$"
CONCAT_NODE_MARK = "∥"   # "2∥": node 2 concatenates its two op outputs (NASNet search space)


# ================================================================== layout
@dataclass(frozen=True)
class NodeSpot:
    """A state (circle) or the output (a stadium whose straight left side holds the ports)."""

    key: int            # state index; the output is ``num_states``
    role: str           # 'input', 'node' or 'output'
    label: str
    x: float
    y: float
    half_height: float = 0.0  # half length of the straight sides (0: a circle)

    @property
    def segment(self) -> tuple[float, float, float, float]:
        """The node as a capsule: this segment thickened by NODE_RADIUS."""
        return (self.x, self.y - self.half_height, self.x, self.y + self.half_height)


@dataclass(frozen=True)
class EdgeRoute:
    src: int
    dst: int
    op: Optional[str]               # None for a concat arrow into the output
    kind: str                       # op kind, or 'concat'
    start: tuple[float, float]      # source centre
    end: tuple[float, float]        # target centre, or a port on the output's left side
    rad: float = 0.0                # arc3 curvature (0 = straight)

    @property
    def to_port(self) -> bool:
        return self.kind == "concat"

    def point(self, t: float) -> tuple[float, float]:
        return bezier_point(self.start, self.end, self.rad, t)


@dataclass(frozen=True)
class CellLayout:
    family: str
    nodes: Mapping[int, NodeSpot]
    edges: tuple[EdgeRoute, ...]
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax of nodes and curves


def cell_depths(cell: Cell) -> dict[int, int]:
    """Column of every state: inputs 0, a node one more than its deepest input."""
    depth = {0: 0, 1: 0}
    for k, node in enumerate(cell.nodes):
        depth[k + 2] = 1 + max(depth[e.input] for e in node)
    return depth


def _columns(cell: Cell, depth: Mapping[int, int]) -> list[list[int]]:
    """States per column, each column ordered top to bottom by the mean row of its inputs."""
    n_cols = max(depth.values()) + 1
    columns: list[list[int]] = [[] for _ in range(n_cols)]
    for s in sorted(depth):
        columns[depth[s]].append(s)
    rank = {0: 0.0, 1: 1.0}
    for c in range(1, n_cols):
        def barycentre(s: int) -> float:
            return sum(rank[e.input] for e in cell.nodes[s - 2]) / len(cell.nodes[s - 2])
        columns[c].sort(key=lambda s: (barycentre(s), s))
        for i, s in enumerate(columns[c]):
            rank[s] = i / max(len(columns[c]) - 1, 1)
    return columns


def _place_nodes(cell: Cell, family: str) -> dict[int, NodeSpot]:
    depth = cell_depths(cell)
    columns = _columns(cell, depth)
    tallest = max(len(col) for col in columns[1:])
    input_gap = max(ROW_GAP, ROW_GAP * (tallest - 1) / 2)
    nodes: dict[int, NodeSpot] = {}
    x = 0.0
    for c, col in enumerate(columns):
        if c:
            # a gap that many edges cross gets more room for their labels
            crossing = sum(1 for k, node in enumerate(cell.nodes) for e in node
                           if depth[e.input] < c <= depth[k + 2])
            x += COLUMN_GAP + 0.15 * max(0, crossing - 4)
        gap = input_gap if c == 0 else ROW_GAP
        for i, s in enumerate(col):
            y = ((len(col) - 1) / 2 - i) * gap
            label = state_label(s, family)
            if s >= 2 and cell.combine[s - 2] == "concat":
                label += CONCAT_NODE_MARK   # the node concatenates its two inputs instead of adding
            nodes[s] = NodeSpot(s, "input" if s < 2 else "node", label, x, y)
    out = cell.num_states
    half = (len(cell.concat) - 1) * PORT_GAP / 2
    nodes[out] = NodeSpot(out, "output", OUTPUT_LABEL, x + COLUMN_GAP, 0.0, half)
    return nodes


@lru_cache(maxsize=64)
def layout_cell(cell: Cell, family: str = "darts") -> CellLayout:
    """Positions (inches) of the states and the output, and the route of every edge.

    Op edges run centre to centre.  Concat arrows end at their own port on the output's left
    side, so their arrowheads never pile up; ports are ordered top to bottom like the heights at
    which the routed arrows approach the output, so concat arrows do not cross near it.
    Cached: a cell saved in several formats is laid out once.
    """
    nodes = _place_nodes(cell, family)
    out = nodes[cell.num_states]
    ops = [EdgeRoute(e.input, k + 2, e.op, op_kind(e.op, family),
                     (nodes[e.input].x, nodes[e.input].y), (nodes[k + 2].x, nodes[k + 2].y))
           for k, node in enumerate(cell.nodes) for e in node]
    # first guess: by the direction of the source seen from the output, nearer sources first
    order = sorted(cell.concat, key=lambda s: (-(nodes[s].y - out.y) / (out.x - nodes[s].x),
                                               -nodes[s].x))
    router = _Router(nodes)
    for _ in range(3):
        concat = [EdgeRoute(s, out.key, None, "concat", (nodes[s].x, nodes[s].y),
                            (out.x - NODE_RADIUS, out.y + out.half_height - i * PORT_GAP))
                  for i, s in enumerate(order)]
        edges = router.route(ops + concat)
        approach = {e.src: e.point(0.9)[1] for e in edges if e.to_port}
        better = sorted(order, key=lambda s: -approach[s])
        if better == order:
            break
        order = better
    return CellLayout(family, MappingProxyType(nodes), tuple(edges), _bounds(nodes, edges))


def _bounds(nodes: Mapping[int, NodeSpot], edges: Sequence[EdgeRoute]):
    r = NODE_RADIUS
    xs = [v for n in nodes.values() for v in (n.x - r, n.x + r)]
    ys = [v for n in nodes.values() for v in (n.y - n.half_height - r, n.y + n.half_height + r)]
    for e in edges:
        for i in range(21):
            x, y = e.point(i / 20)
            xs.append(x)
            ys.append(y)
    return min(xs), min(ys), max(xs), max(ys)


_RADS = (0.0, -0.12, 0.12, -0.22, 0.22, -0.32, 0.32, -0.45, 0.45)


class _Router:
    """Picks an arc3 curvature per edge: straight when clear, bent around nodes it would cross,
    and bent so that edges sharing a node leave or enter it at visibly different angles and do
    not cross each other.

    Parallel edges (same source and target) are fanned apart symmetrically so both stay visible.
    Each group of parallel edges gets one base curvature from ``_RADS``; a greedy pass is
    followed by passes that re-route each group against all the others (coordinate descent on
    the total cost), from a few starting orders.  Costs are cached, so routing the same cell
    again with other concat ports is cheap.
    """

    def __init__(self, nodes: Mapping[int, NodeSpot]) -> None:
        self.nodes = nodes
        self._curves: dict[tuple, list] = {}
        self._own: dict[tuple, float] = {}
        self._pair: dict[tuple, float] = {}

    def curves(self, group: tuple, b: float) -> list:
        """(edge, (out angle, in angle), polyline) of each edge of ``group`` at curvature ``b``."""
        if (group, b) not in self._curves:
            proto, n = group[3], group[4]
            edges = [replace(proto, rad=b + d) for d in _spread(n)]
            self._curves[group, b] = [
                (e, _end_angles(e), np.array([e.point(t) for t in _CROSS_TS])) for e in edges]
        return self._curves[group, b]

    def own_cost(self, group: tuple, b: float) -> float:
        if (group, b) not in self._own:
            edges = [e for e, _, _ in self.curves(group, b)]
            self._own[group, b] = _route_cost(edges, self.nodes) + abs(b)
        return self._own[group, b]

    def pair_cost(self, group: tuple, b: float, other: tuple, b2: float) -> float:
        """Crowded ends and crossings between two groups that share a node."""
        key = (group, b, other, b2)
        if key not in self._pair:
            shares_src, shares_dst = other[0] == group[0], other[1] == group[1]
            total = 0.0
            if shares_src or shares_dst:
                for e, (out1, in1), line1 in self.curves(group, b):
                    for _, (out2, in2), line2 in self.curves(other, b2):
                        if shares_src:
                            total += _angle_crowding(out1, (out2,), within=12.0) * 1.5
                        if shares_dst and not e.to_port:  # ports are apart already
                            total += _angle_crowding(in1, (in2,)) * 2.0
                        if _polylines_cross(line1, line2):
                            total += 1.0
            self._pair[key] = total
        return self._pair[key]

    def route(self, wanted: Sequence[EdgeRoute]) -> list[EdgeRoute]:
        members: dict[tuple, list[int]] = {}
        for i, e in enumerate(wanted):
            members.setdefault((e.src, e.dst, e.end), []).append(i)
        # a group: (src, dst, end, prototype edge, number of parallel edges)
        groups = [(*k, wanted[m[0]], len(m)) for k, m in members.items()]
        base: dict[tuple, float] = {}

        def cost(group: tuple, b: float) -> float:
            return self.own_cost(group, b) + sum(
                self.pair_cost(group, b, other, b2) for other, b2 in base.items() if other != group)

        def descend(order: Sequence[tuple]) -> tuple[float, dict[tuple, float]]:
            base.clear()
            for _ in range(4):
                before = dict(base)
                for group in order:
                    base[group] = min(_RADS, key=lambda b: cost(group, b))
                if base == before:
                    break
            return sum(cost(g, base[g]) for g in order), dict(base)

        # starting orders: edge order, longest first, reversed; the cheapest result wins
        longest = sorted(groups, key=lambda g: -_edge_length(g[3]))
        _, best = min((descend(order) for order in (groups, longest, groups[::-1])),
                      key=lambda r: r[0])
        routed: dict[int, EdgeRoute] = {}
        for group in groups:
            for i, d in zip(members[group[:3]], _spread(group[4])):
                routed[i] = replace(wanted[i], rad=round(best[group] + d, 3))
        return [routed[i] for i in range(len(wanted))]


def _spread(n: int) -> list[float]:
    """Curvature offsets that fan ``n`` parallel edges apart symmetrically."""
    return [0.28 * (k - (n - 1) / 2) for k in range(n)]


_CROSS_TS = tuple(0.1 + 0.05 * i for i in range(17))  # 0.1 .. 0.9: ends (shared nodes) left out


def _polylines_cross(p: "np.ndarray", q: "np.ndarray") -> bool:
    """Whether two polylines (n x 2 arrays) properly intersect anywhere."""
    a1, a2 = p[:-1, None, :], p[1:, None, :]
    b1, b2 = q[None, :-1, :], q[None, 1:, :]

    def orient(o, u, v):
        return (u[..., 0] - o[..., 0]) * (v[..., 1] - o[..., 1]) - \
            (u[..., 1] - o[..., 1]) * (v[..., 0] - o[..., 0])
    d1, d2 = orient(b1, b2, a1), orient(b1, b2, a2)
    d3, d4 = orient(a1, a2, b1), orient(a1, a2, b2)
    return bool(np.any((d1 * d2 < 0) & (d3 * d4 < 0)))


def _end_angles(edge: EdgeRoute) -> tuple[float, float]:
    """Directions (degrees) in which an edge's curve leaves its start and enters its end."""
    (x1, y1), (x2, y2) = edge.start, edge.end
    cx = (x1 + x2) / 2 + edge.rad * (y2 - y1)
    cy = (y1 + y2) / 2 - edge.rad * (x2 - x1)
    return (math.degrees(math.atan2(cy - y1, cx - x1)), math.degrees(math.atan2(y2 - cy, x2 - cx)))


def _angle_crowding(angle: float, others: Iterable[float], within: float = 16.0) -> float:
    """0 when ``angle`` is at least ``within`` degrees from all ``others``, up to 1 per clash."""
    total = 0.0
    for other in others:
        diff = abs((angle - other + 180) % 360 - 180)
        total += max(0.0, within - diff) / within
    return total


def _route_cost(edges: Sequence[EdgeRoute], nodes: Mapping[int, NodeSpot]) -> float:
    """How badly the edges' curves pass through nodes other than their own ends."""
    clearance = NODE_RADIUS + 0.15
    cost = 0.0
    for edge in edges:
        pts = np.array([edge.point(i / 24) for i in range(2, 23)])
        for other in nodes.values():
            if other.key not in (edge.src, edge.dst):
                dist = _points_seg_dist(pts, other.segment)
                cost += 10 * float(np.clip(clearance - dist, 0.0, None).sum())
    return cost


def bezier_point(p0: tuple[float, float], p2: tuple[float, float], rad: float, t: float):
    """Point ``t`` of matplotlib's ``arc3,rad=rad`` curve from ``p0`` to ``p2`` (equal aspect)."""
    (x1, y1), (x2, y2) = p0, p2
    cx = (x1 + x2) / 2 + rad * (y2 - y1)
    cy = (y1 + y2) / 2 - rad * (x2 - x1)
    u = 1 - t
    return (u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2)


# ------------------------------------------------------------------ plane geometry
def _point_seg_dist(p, seg) -> float:
    x1, y1, x2, y2 = seg
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - x1) * dx + (p[1] - y1) * dy) / length2))
    return math.hypot(p[0] - (x1 + t * dx), p[1] - (y1 + t * dy))


def _points_seg_dist(pts: "np.ndarray", seg) -> "np.ndarray":
    """Distances of the rows of ``pts`` (n x 2) to a segment."""
    x1, y1, x2, y2 = seg
    d = np.array([x2 - x1, y2 - y1])
    rel = pts - (x1, y1)
    length2 = float(d @ d)
    t = np.zeros(len(pts)) if length2 == 0 else np.clip(rel @ d / length2, 0.0, 1.0)
    return np.hypot(*(rel - t[:, None] * d).T)


def _seg_dist(s1, s2) -> float:
    """Distance between two segments (0 when they cross)."""
    if _segments_cross(s1, s2):
        return 0.0
    return min(_point_seg_dist(s1[:2], s2), _point_seg_dist(s1[2:], s2),
               _point_seg_dist(s2[:2], s1), _point_seg_dist(s2[2:], s1))


def _segments_cross(s1, s2) -> bool:
    def orient(ax_, ay, bx, by, cx, cy):
        return (bx - ax_) * (cy - ay) - (by - ay) * (cx - ax_)
    d1 = orient(*s2[:2], *s2[2:], *s1[:2])
    d2 = orient(*s2[:2], *s2[2:], *s1[2:])
    d3 = orient(*s1[:2], *s1[2:], *s2[:2])
    d4 = orient(*s1[:2], *s1[2:], *s2[2:])
    return d1 * d2 < 0 and d3 * d4 < 0


# ================================================================== drawing
_MARGIN = 0.25          # inches of empty data space around the drawing
_TITLE_IN = 0.45        # inches above the axes for the title
_LEGEND_IN = 0.40       # inches below the axes for the legend


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot, no display
    return fig


def _axes_size(layout: CellLayout) -> tuple[float, float]:
    x0, y0, x1, y1 = layout.bounds
    return x1 - x0 + 2 * _MARGIN, y1 - y0 + 2 * _MARGIN


def _axes_for(fig: Figure, layout: CellLayout, left: float, bottom: float):
    """Axes at (left, bottom) inches, sized so one data unit is one inch (equal aspect)."""
    fw, fh = fig.get_size_inches()
    w, h = _axes_size(layout)
    x0, y0, x1, y1 = layout.bounds
    ax = fig.add_axes((left / fw, bottom / fh, w / fw, h / fh))
    ax.set_xlim(x0 - _MARGIN, x1 + _MARGIN)
    ax.set_ylim(y0 - _MARGIN, y1 + _MARGIN)
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()
    return ax


def _draw_nodes(ax, layout: CellLayout) -> None:
    for spot in layout.nodes.values():
        style = dict(facecolor=NODE_FILL[spot.role], edgecolor="#333333", linewidth=1.0, zorder=3)
        if spot.half_height:
            r = NODE_RADIUS
            patch = FancyBboxPatch((spot.x - r, spot.y - spot.half_height - r), 2 * r,
                                   2 * (spot.half_height + r),
                                   boxstyle=f"round,pad=0,rounding_size={r}", **style)
        else:
            patch = Circle((spot.x, spot.y), NODE_RADIUS, **style)
        ax.add_patch(patch)
        ax.text(spot.x, spot.y, spot.label, ha="center", va="center", fontsize=NODE_FONTSIZE,
                zorder=4)


def _edge_style(kind: str) -> tuple[str, str, str]:
    return CONCAT_STYLE if kind == "concat" else OP_KIND_STYLE[kind]


def _draw_edges(ax, layout: CellLayout) -> None:
    # Arrows are cut back by the node radius (one data unit is one inch = 72 pt), which for
    # circles is exactly where the curve leaves the node; much cheaper than patch clipping.
    radius_pt = NODE_RADIUS * 72
    for edge in layout.edges:
        _, colour, style = _edge_style(edge.kind)
        arrow = FancyArrowPatch(
            edge.start, edge.end, arrowstyle="-|>,head_length=6,head_width=3", mutation_scale=1,
            connectionstyle=f"arc3,rad={edge.rad}", color=colour, linestyle=style,
            linewidth=1.0 if edge.kind == "concat" else 1.4,
            shrinkA=radius_pt + 1, shrinkB=0 if edge.to_port else radius_pt + 1, zorder=2)
        ax.add_patch(arrow)


# label positions tried along each edge (fractions of the curve)
_LABEL_TS = tuple(0.22 + 0.04 * i for i in range(15))  # 0.22 .. 0.78


def _place_labels(ax, layout: CellLayout) -> None:
    """Label every op edge with its op name, written along the edge.

    Each label is a capsule (a segment along the edge's tangent, as thick as the text) placed at
    the point of the edge where it collides least with labels already placed, with nodes and
    arrowheads, and with other edges (so a label does not sit on a crossing, where it would be
    ambiguous).  Geometry is in display pixels, measured with the Agg renderer.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    px_per_unit = to_px((1, 0))[0] - to_px((0, 0))[0]
    pt = fig.dpi / 72
    obstacles = []  # nodes as capsules: (segment in px, radius in px)
    for spot in layout.nodes.values():
        (x1, y1), (x2, y2) = to_px(spot.segment[:2]), to_px(spot.segment[2:])
        obstacles.append(((x1, y1, x2, y2), NODE_RADIUS * px_per_unit))
    curve_pts = np.array([to_px(e.point(i / 40)) for e in layout.edges for i in range(2, 39)])
    curve_of = np.repeat(np.arange(len(layout.edges)), 37)

    placed: list[tuple] = []  # label capsules: (segment in px, half thickness in px)
    order = sorted(range(len(layout.edges)), key=lambda i: _edge_length(layout.edges[i]))
    for i in order:
        edge = layout.edges[i]
        if edge.op is None:
            continue
        _, colour, _ = _edge_style(edge.kind)
        text = ax.text(0, 0, _literal_text(edge.op), fontsize=LABEL_FONTSIZE, ha="center",
                       va="center", rotation_mode="anchor", color=colour, zorder=5,
                       bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor=colour,
                                 linewidth=0.6))
        ext = text.get_window_extent(renderer)
        half_len = ext.width / 2 + 2 * pt
        half_thick = ext.height / 2 + 1.5 * pt
        near = half_thick + 0.5 * LABEL_FONTSIZE * pt  # keep crossings this far from the text
        best, best_cost = None, float("inf")
        for t in _LABEL_TS:
            (x, y), (tx, ty) = _point_and_tangent(edge, t, to_px)
            px, py = to_px((x, y))
            seg = (px - tx * half_len, py - ty * half_len, px + tx * half_len, py + ty * half_len)
            cost = abs(t - 0.5)
            for other, thick in placed:
                cost += max(0.0, half_thick + thick - _seg_dist(seg, other)) / half_thick * 20
            for node_seg, radius in obstacles:  # 6 pt more: arrowheads sit at node borders
                overlap = radius + half_thick + 6 * pt - _seg_dist(seg, node_seg)
                cost += max(0.0, overlap) / half_thick * 20
            close = _points_seg_dist(curve_pts, seg) < near
            cost += 0.5 * int(np.count_nonzero(close & (curve_of != i)))
            if cost < best_cost:
                best, best_cost = (x, y, math.degrees(math.atan2(ty, tx)), seg), cost
        x, y, angle, seg = best
        text.set_position((x, y))
        text.set_rotation(angle)
        placed.append((seg, half_thick))


def _point_and_tangent(edge: EdgeRoute, t: float, to_px):
    """Point ``t`` of the edge (data units) and its unit tangent in display space, oriented to
    read left to right (text is never upside down)."""
    p, q = edge.point(t), edge.point(min(t + 0.01, 1.0))
    (px, py), (qx, qy) = to_px(p), to_px(q)
    dx, dy = qx - px, qy - py
    norm = math.hypot(dx, dy) or 1.0
    dx, dy = dx / norm, dy / norm
    if dx < 0 or (dx == 0 and dy < 0):
        dx, dy = -dx, -dy
    return p, (dx, dy)


def _edge_length(edge: EdgeRoute) -> float:
    return math.hypot(edge.end[0] - edge.start[0], edge.end[1] - edge.start[1])


def _literal_text(text: str) -> str:
    """``text`` shown as is: a '$' would otherwise start matplotlib mathtext."""
    return text.replace("$", r"\$")


def _legend_handles(kinds: Sequence[str], cells: Sequence[Cell] = ()) -> list[Line2D]:
    order = [k for k in OP_KIND_STYLE if k in kinds] + ["concat"]
    handles = []
    for kind in order:
        label, colour, style = _edge_style(kind)
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=1.6, label=label))
    if any(not cell.adds_only for cell in cells):
        handles.append(Line2D([], [], linestyle="none", marker=r"$\parallel$", color="#333333", markersize=7,
                              label="node concatenates its two ops"))
    return handles


def _draw_cell(ax, layout: CellLayout) -> None:
    _draw_nodes(ax, layout)
    _draw_edges(ax, layout)
    _place_labels(ax, layout)


# ================================================================== checks and saving
def _check_cell(cell: str) -> str:
    if cell not in CELL_TYPES:
        raise ConfigError(f"unknown cell {cell!r}; valid cells are "
                          f"{', '.join(map(repr, CELL_TYPES))}.")
    return cell


def _check_path(path: Union[str, Path, None]) -> Optional[Path]:
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise ConfigError(f"cannot save a plot as {str(path)!r}: unsupported suffix "
                          f"{path.suffix or '(none)'!r}; valid suffixes are "
                          f"{', '.join(SAVE_FORMATS)}.")
    return path


def _save(fig: Figure, path: Path, dpi: int = PNG_DPI) -> None:
    """Write atomically (a temporary file beside ``path``, then a rename): a full disk or a kill
    never leaves a torn plot, and a failure names ``path`` rather than the temporary file."""
    from .fileio import WriteError, atomic_write

    fmt = path.suffix.lower().lstrip(".")
    buffer = io.BytesIO()  # rendered in memory first: the writer takes bytes, matplotlib wants a seekable file
    # svg.fonttype 'none' keeps labels as <text> (searchable, selectable) instead of glyph paths.
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    payload = buffer.getvalue()
    try:
        atomic_write(path, lambda handle: handle.write(payload))
    except OSError as err:
        raise WriteError(err.errno, f"cannot write the plot to {str(path)!r}: {describe_os_error(err)}.") from None


def _as_genotype(genotype: Any) -> Genotype:
    return genotype if isinstance(genotype, Genotype) else Genotype.parse(genotype)


# ================================================================== public API
def plot_cell(genotype: Union[Genotype, str, Path, Mapping], cell: str = "normal",
              path: Union[str, Path, None] = None, *, title: Optional[str] = None) -> Figure:
    """Draw the ``cell`` ('normal' or 'reduce') of ``genotype``; save to ``path`` if given.

    ``genotype`` is a Genotype or anything ``Genotype.parse`` reads (a file path, a dict, a
    ``Genotype(...)`` string).  The format follows the suffix of ``path``: .svg, .png or .pdf.
    Returns the figure (Agg canvas, not registered with pyplot).
    """
    _check_cell(cell)
    out = _check_path(path)
    geno = _as_genotype(genotype)
    layout = layout_cell(geno.cell(cell), geno.family)
    w, h = _axes_size(layout)
    fig_w = max(w, 3.0)  # room for the title and legend however small the cell
    fig = _new_figure(fig_w, h + _TITLE_IN + _LEGEND_IN)
    ax = _axes_for(fig, layout, (fig_w - w) / 2, _LEGEND_IN)
    _draw_cell(ax, layout)
    name = geno.name or "genotype"
    fig.suptitle(_literal_text(title if title is not None else f"{name} — {cell} cell"),
                 y=1 - 0.12 / fig.get_size_inches()[1], va="top", fontsize=12)
    kinds = {e.kind for e in layout.edges}
    handles = _legend_handles(kinds, [geno.cell(cell)])
    fig.legend(handles=handles, loc="lower center", ncol=len(handles),
               frameon=False, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    if out is not None:
        _save(fig, out)
    return fig


def plot_genotype(genotype: Union[Genotype, str, Path, Mapping],
                  path: Union[str, Path, None] = None, *, title: Optional[str] = None) -> Figure:
    """Draw the normal and the reduction cell side by side; save to ``path`` if given."""
    out = _check_path(path)
    geno = _as_genotype(genotype)
    layouts = [layout_cell(geno.cell(c), geno.family) for c in CELL_TYPES]
    sizes = [_axes_size(lay) for lay in layouts]
    gap = 0.6
    sub_title = 0.3
    width = sum(w for w, _ in sizes) + gap
    height = max(h for _, h in sizes) + _TITLE_IN + sub_title + _LEGEND_IN
    fig = _new_figure(width, height)
    left = 0.0
    kinds: set[str] = set()
    for cell_type, lay, (w, h) in zip(CELL_TYPES, layouts, sizes):
        bottom = _LEGEND_IN + (height - _TITLE_IN - sub_title - _LEGEND_IN - h) / 2
        ax = _axes_for(fig, lay, left, bottom)
        _draw_cell(ax, lay)
        ax.set_title(f"{cell_type} cell", fontsize=10)
        kinds |= {e.kind for e in lay.edges}
        left += w + gap
    name = geno.name or "genotype"
    default = f"{name} — normal and reduce cells"
    fig.suptitle(_literal_text(title if title is not None else default),
                 y=1 - 0.12 / height, va="top", fontsize=12)
    handles = _legend_handles(kinds, [geno.normal, geno.reduce])
    fig.legend(handles=handles, loc="lower center", ncol=len(handles),
               frameon=False, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    if out is not None:
        _save(fig, out)
    return fig


def plot_cell_grid(rows: Sequence[tuple[str, Sequence[tuple[str, Any]]]], cell: str = "normal",
                   path: Union[str, Path, None] = None, *, title: Optional[str] = None, dpi: int = 100) -> Figure:
    """One cell type of many genotypes side by side: a row per label, a panel per ``(caption,
    genotype)`` of the row (``[("PC-DARTS", [("seed 0", g0), ("seed 1", g1)]), ...]``), each drawn
    as :func:`plot_cell` draws it, at the same scale.  Saved to ``path`` if given (a PNG at ``dpi``:
    a grid is large, and 100 keeps its labels legible)."""
    _check_cell(cell)
    out = _check_path(path)
    grid = [(label, [(caption, _as_genotype(g)) for caption, g in panels]) for label, panels in rows]
    if not grid or not any(panels for _, panels in grid):
        raise ConfigError("plot_cell_grid needs at least one genotype to draw.")
    layouts = [[layout_cell(g.cell(cell), g.family) for _, g in panels] for _, panels in grid]
    columns = max(len(panels) for _, panels in grid)
    col_w = [max((_axes_size(row[c])[0] for row in layouts if c < len(row)), default=0.0) for c in range(columns)]
    row_h = [max((_axes_size(lay)[1] for lay in row), default=0.0) for row in layouts]
    label_w, gap, caption_h = 1.7, 0.35, 0.3
    width = label_w + sum(col_w) + gap * (columns - 1)
    height = _TITLE_IN + sum(h + caption_h for h in row_h) + gap * (len(grid) - 1) + _LEGEND_IN
    fig = _new_figure(width, height)
    kinds: set[str] = set()
    top = height - _TITLE_IN
    for (label, panels), row, h in zip(grid, layouts, row_h):
        top -= caption_h
        fig.text(0.1 / width, (top - h / 2) / height, _literal_text(label), ha="left", va="center", fontsize=11,
                 fontweight="bold")
        left = label_w
        for c, ((caption, _), lay) in enumerate(zip(panels, row)):
            w, ph = _axes_size(lay)
            ax = _axes_for(fig, lay, left + (col_w[c] - w) / 2, top - h + (h - ph) / 2)
            _draw_cell(ax, lay)
            ax.set_title(_literal_text(caption), fontsize=9)
            kinds |= {e.kind for e in lay.edges}
            left += col_w[c] + gap
        top -= h + gap
    fig.suptitle(_literal_text(title if title is not None else f"{cell} cells"), y=1 - 0.12 / height, va="top",
                 fontsize=12)
    cells = [g.cell(cell) for _, panels in grid for _, g in panels]
    handles = _legend_handles(kinds, cells)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    if out is not None:
        _save(fig, out, dpi)
    return fig
