"""Pictures of a model's normalization: the layer graph, coloured by state.

`write_picture(report, path)` draws an `AuditReport`'s graph to `.svg`, `.png` or `.dot`:

- every dense, conv and recurrent layer is coloured by its state (normalized pre-activation,
  post-activation or in-cell; not normalized; an output layer, exempt);
- norm layers, opaque (custom) layers, Lambda layers, keras.ops calls and inputs each
  have a style of their own;
- nested models are clusters (boxes around their layers), a shared layer is one box
  marked with its call count;
- with `compare` (the audit of the original model), inserted layers are marked `+`,
  changed ones `~`, and removed ones listed.

SVG is written here, from a layered layout computed here (nested models laid out inside
their boxes): no system binary and no picture library. PNG is drawn from the same
layout with Pillow (a wheel, a normify dependency). DOT is the same picture for Graphviz
(`dot -Tsvg`); without Pillow a PNG cannot be drawn, and the DOT is written instead, with
one line saying what to install.

Reads the `Graph` only: no Keras, no backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normify import kinds
from normify.errors import NormifyError
from normify.flow import build_flow
from normify.graph import walk_layers

if TYPE_CHECKING:
    from normify.audit import AuditReport

# state -> (fill, border, border style, legend text)
STYLES: dict[str, tuple[str, str, str, str]] = {
    "pre": ("#7cc87c", "#2e7d32", "solid", "normalized, pre-activation"),
    "post": ("#c6e9b4", "#2e7d32", "solid", "normalized, post-activation"),
    "in-cell": ("#9fd6e8", "#01579b", "solid", "normalized in the cell"),
    "unnormalized": ("#f29b9b", "#b71c1c", "solid", "not normalized"),
    "exempt": ("#e6e6e6", "#757575", "dashed", "output layer (exempt)"),
    "norm": ("#ffe07a", "#b28704", "solid", "norm layer"),
    "opaque": ("#b0b0b0", "#212121", "dotted", "opaque (custom) layer"),
    "lambda": ("#ffc274", "#e65100", "solid", "Lambda layer (Python code)"),
    "op": ("#efe3f7", "#7b1fa2", "solid", "keras.ops call"),
    "input": ("#ffffff", "#424242", "solid", "input"),
    "other": ("#ffffff", "#9e9e9e", "solid", "other layer"),
}
MARKS = {"inserted": ("#1565c0", "+"), "changed": ("#6a1b9a", "~")}
POSITION_STATES = {kinds.PRE: "pre", kinds.POST: "post", kinds.IN_CELL: "in-cell"}

FONT_SIZE = 11
CHAR_WIDTH = 6.4  # average width of a character at FONT_SIZE (Helvetica-like)
LINE_HEIGHT = 14
PAD_X, PAD_Y = 8, 5
GAP_X, GAP_Y = 18, 34
CLUSTER_PAD, CLUSTER_HEADER = 10, 20
MARGIN = 16


@dataclass
class Box:
    """One layer (all its calls) as drawn."""

    path: str
    lines: list[str]
    state: str
    calls: int
    mark: str | None = None
    width: float = 0.0
    height: float = 0.0
    x: float = 0.0  # top-left, absolute
    y: float = 0.0


@dataclass
class Cluster:
    """A nested model, drawn as a box around its layers."""

    path: str
    label: str
    children: list[str] = field(default_factory=list)  # box or cluster paths, in order
    width: float = 0.0
    height: float = 0.0
    x: float = 0.0
    y: float = 0.0


@dataclass
class Picture:
    title: str
    boxes: dict[str, Box]
    clusters: dict[str, Cluster]  # "" is the model itself
    edges: list[tuple[str, str]]
    removed: list[str] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


# --------------------------------------------------------------------------- the model


def picture_of(report: AuditReport, compare: AuditReport | None = None) -> Picture:
    """The boxes, clusters and edges of an audited model (laid out)."""
    graph = report.graph
    if graph is None:
        raise NormifyError("this audit report holds no graph to draw", report.model)
    flow = build_flow(graph)
    rows = {row.path: row for row in report.rows}
    lambdas = {part["path"] for part in report.opaque if part["class"] == "Lambda"}
    opaque = {part["path"] for part in report.opaque} - lambdas
    specs = {path: spec for path, spec, _ in walk_layers(graph)}
    marks, removed = _differences(report, compare) if compare is not None else ({}, [])
    boxes: dict[str, Box] = {}
    order: dict[str, int] = {}
    for path, sites in flow.sites_by_path().items():
        spec = sites[0].spec
        state = _state(path, spec, rows.get(path), opaque, lambdas)
        boxes[path] = Box(path, _lines(path, spec, rows.get(path), len(sites), marks.get(path)),
                          state, len(sites), marks.get(path))  # fmt: skip
        order[path] = len(order)
    edges: list[tuple[str, str]] = []
    for site in flow.sites.values():
        for producer, _ in site.inputs:
            edge = (flow.sites[producer].path, site.path)
            if edge[0] != edge[1] and edge not in edges:
                edges.append(edge)
    clusters = {"": Cluster("", graph.name)}
    for path in boxes:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix not in clusters:
                owner = specs.get(prefix)
                label = f"{parts[depth - 1]} ({owner.class_name})" if owner else parts[depth - 1]
                clusters[prefix] = Cluster(prefix, label)
                clusters[_parent(prefix)].children.append(prefix)
        clusters[_parent(path)].children.append(path)
    title = f"{report.model}"
    picture = Picture(title, boxes, clusters, edges, removed)
    _layout(picture, order)
    return picture


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _state(path: str, spec: Any, row: Any, opaque: set[str], lambdas: set[str]) -> str:
    if row is not None:
        if row.normalized:
            return POSITION_STATES.get(row.position or "", "post")
        return "exempt" if row.output else "unnormalized"
    if path in lambdas:
        return "lambda"
    if path in opaque or spec.kind == kinds.OTHER and not kinds.is_builtin(spec.module):
        return "opaque"
    if spec.kind == kinds.MODEL:  # a nested model whose insides cannot be read
        return "opaque"
    return {kinds.NORM: "norm", kinds.OP: "op", kinds.INPUT: "input"}.get(spec.kind, "other")


def _lines(path: str, spec: Any, row: Any, calls: int, mark: str | None) -> list[str]:
    name = path.rsplit("/", 1)[-1]
    if mark is not None:
        name = f"{MARKS[mark][1]} {name}"
    class_name = kinds.display_name(spec.class_name, spec.config)
    activation = kinds.activation_name(spec.class_name, spec.config)
    if spec.kind == kinds.OP:
        class_name = f"ops.{spec.class_name}"
    second = class_name if activation in (None, "linear") else f"{class_name} ({activation})"
    lines = [name, second]
    if row is not None:
        if row.normalized:
            norm = "in-cell LayerNormalization" if row.position == kinds.IN_CELL else row.norm
            lines.append(f"{norm}, {row.position}")
        else:
            lines.append("output (exempt)" if row.output else "not normalized")
    if calls > 1:
        lines.append(f"shared: {calls} calls")
    return lines


def _differences(report: AuditReport, compare: AuditReport) -> tuple[dict[str, str], list[str]]:
    """Layers inserted, changed (class, activation or bias) and removed since `compare`."""
    if report.graph is None:
        raise NormifyError("this audit report holds no graph to draw", report.model)
    if compare.graph is None:
        raise NormifyError("the audit report to compare with holds no graph", compare.model)
    after = {path: spec for path, spec, _ in walk_layers(report.graph)}
    before = {path: spec for path, spec, _ in walk_layers(compare.graph)}
    marks = {}
    for path, spec in after.items():
        old = before.get(path)
        if old is None:
            marks[path] = "inserted"
        elif _signature(old) != _signature(spec):
            marks[path] = "changed"
    removed = [path for path in before if path not in after]
    return marks, removed


def _signature(spec: Any) -> tuple[Any, ...]:
    config = spec.config
    return (
        spec.class_name,
        kinds.activation_name(spec.class_name, config),
        config.get("use_bias"),
        config.get("axis"),
    )


# -------------------------------------------------------------------------- the layout


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _layout(picture: Picture, order: dict[str, int]) -> None:
    for box in picture.boxes.values():
        box.width = max(_text_width(line) for line in box.lines) + 2 * PAD_X
        box.height = len(box.lines) * LINE_HEIGHT + 2 * PAD_Y
    first: dict[str, int] = {}  # the first appearance of each box or cluster
    for path, index in order.items():
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            first[key] = min(first.get(key, index), index)
    _layout_cluster(picture, "", first)
    root = picture.clusters[""]
    legend_height = _legend_height(picture)
    title_width = _text_width(picture.title) * 1.3
    picture.width = max(root.width, _legend_width(picture), title_width) + 2 * MARGIN
    _place(picture, "", (picture.width - root.width) / 2, MARGIN + 22 + legend_height)
    removed_height = (LINE_HEIGHT + 8) if picture.removed else 0
    picture.height = root.height + 2 * MARGIN + 22 + legend_height + removed_height


def _child_of(cluster: str, path: str) -> str | None:
    """The direct child of `cluster` (a box or a cluster path) that holds `path`."""
    prefix = f"{cluster}/" if cluster else ""
    if not path.startswith(prefix) or path == cluster:
        return None
    rest = path[len(prefix) :].split("/")
    return prefix + rest[0]


def _layout_cluster(picture: Picture, name: str, first: dict[str, int]) -> None:
    cluster = picture.clusters[name]
    for child in cluster.children:
        if child in picture.clusters:
            _layout_cluster(picture, child, first)
    children = sorted(cluster.children, key=lambda child: first[child])
    predecessors: dict[str, list[str]] = {child: [] for child in children}
    for source, target in picture.edges:
        a, b = _child_of(name, source), _child_of(name, target)
        if a is None or b is None or a == b or first[a] >= first[b]:
            continue  # outside this cluster, inside one child, or a back edge
        if a not in predecessors[b]:
            predecessors[b].append(a)
    rank: dict[str, int] = {}
    for child in children:  # in order of appearance: predecessors come first
        rank[child] = max((rank[p] + 1 for p in predecessors[child]), default=0)
    rows: list[list[str]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    slot: dict[str, float] = {}
    for child in children:
        rows[rank[child]].append(child)
    for row in rows:
        row.sort(key=lambda c: (_mean([slot[p] for p in predecessors[c]], first[c]), first[c]))
        for index, child in enumerate(row):
            slot[child] = index - (len(row) - 1) / 2
    sizes = {child: _size(picture, child) for child in children}
    widths = [sum(sizes[c][0] for c in row) + GAP_X * (len(row) - 1) for row in rows]
    heights = [max(sizes[c][1] for c in row) for row in rows]
    pad = CLUSTER_PAD if name else 0
    header = CLUSTER_HEADER if name else 0
    inner_width = max(widths, default=0)
    cluster.width = inner_width + 2 * pad
    y: float = header + pad
    positions: dict[str, tuple[float, float]] = {}
    for row, width, height in zip(rows, widths, heights, strict=True):
        x = pad + (inner_width - width) / 2
        for child in row:
            positions[child] = (x, y)
            x += sizes[child][0] + GAP_X
        y += height + GAP_Y
    cluster.height = (y - GAP_Y if rows else y) + pad
    cluster.children = children
    picture.clusters[name] = cluster
    cluster._positions = positions  # type: ignore[attr-defined]


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _size(picture: Picture, path: str) -> tuple[float, float]:
    item = picture.clusters.get(path) or picture.boxes[path]
    return item.width, item.height


def _place(picture: Picture, name: str, x: float, y: float) -> None:
    cluster = picture.clusters[name]
    cluster.x, cluster.y = x, y
    for child, (dx, dy) in cluster._positions.items():  # type: ignore[attr-defined]
        if child in picture.clusters:
            _place(picture, child, x + dx, y + dy)
        else:
            box = picture.boxes[child]
            box.x, box.y = x + dx, y + dy


LEGEND_ORDER = ("pre", "post", "in-cell", "unnormalized", "exempt", "norm", "opaque", "lambda",
                "op", "input", "other")  # fmt: skip
LEGEND_SWATCH = 14
LEGEND_PER_ROW = 3
LEGEND_COLUMN = 200.0


def _legend_entries(picture: Picture) -> list[tuple[str, str, str, str]]:
    """The styles the picture uses, and the marks."""
    states = {box.state for box in picture.boxes.values()}
    marks = {box.mark for box in picture.boxes.values() if box.mark}
    entries = [(state, *STYLES[state][:2], STYLES[state][3]) for state in LEGEND_ORDER
               if state in states]  # fmt: skip
    entries += [(mark, "#ffffff", colour, f"{symbol} {mark}") for mark, (colour, symbol) in
                MARKS.items() if mark in marks]  # fmt: skip
    return entries


def _legend_width(picture: Picture) -> float:
    return min(len(_legend_entries(picture)), LEGEND_PER_ROW) * LEGEND_COLUMN


def _legend_height(picture: Picture) -> float:
    rows = -(-len(_legend_entries(picture)) // LEGEND_PER_ROW)
    return rows * (LEGEND_SWATCH + 6) + 10


def _legend_positions(picture: Picture) -> list[tuple[tuple[str, str, str, str], float, float]]:
    placed: list[tuple[tuple[str, str, str, str], float, float]] = []
    for index, entry in enumerate(_legend_entries(picture)):
        row, column = divmod(index, LEGEND_PER_ROW)
        x = MARGIN + column * LEGEND_COLUMN
        placed.append((entry, x, MARGIN + 22 + row * (LEGEND_SWATCH + 6)))
    return placed


def _edge_points(picture: Picture, source: str, target: str) -> tuple[float, ...]:
    a, b = picture.boxes[source], picture.boxes[target]
    x1, y1 = a.x + a.width / 2, a.y + a.height
    x2, y2 = b.x + b.width / 2, b.y
    if y2 <= y1:  # upwards (a back edge): leave and enter on the right side
        x1, y1 = a.x + a.width, a.y + a.height / 2
        x2, y2 = b.x + b.width, b.y + b.height / 2
        bend = 40 + abs(y1 - y2) / 6
        return x1, y1, x1 + bend, y1, x2 + bend, y2, x2, y2
    bend = max(14.0, (y2 - y1) / 2)
    return x1, y1, x1, y1 + bend, x2, y2 - bend, x2, y2


# -------------------------------------------------------------------------------- SVG


def to_svg(picture: Picture) -> str:
    """The picture as a standalone SVG document."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{picture.width:.0f}" '
        f'height="{picture.height:.0f}" viewBox="0 0 {picture.width:.0f} {picture.height:.0f}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="{FONT_SIZE}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="14" font-weight="bold">'
        f"{escape(picture.title)}</text>",
    ]
    out.append('<g class="legend">')
    for (key, fill, stroke, text), x, y in _legend_positions(picture):
        dash = _dash(STYLES[key][2]) if key in STYLES else ""
        width: float = 3 if key in MARKS else 1
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{LEGEND_SWATCH}" height="{LEGEND_SWATCH}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>'
            f'<text x="{x + LEGEND_SWATCH + 5:.1f}" y="{y + 11:.1f}">{escape(text)}</text>'
        )
    out.append("</g>")
    for name, cluster in picture.clusters.items():
        if not name:
            continue
        depth = name.count("/")
        out.append(
            f'<g class="cluster" data-path="{escape(name)}"><title>{escape(name)}</title>'
            f'<rect x="{cluster.x:.1f}" y="{cluster.y:.1f}" width="{cluster.width:.1f}" '
            f'height="{cluster.height:.1f}" rx="6" fill="{_cluster_fill(depth)}" '
            f'stroke="#5c6bc0" stroke-width="1.2"/>'
            f'<text x="{cluster.x + 8:.1f}" y="{cluster.y + 14:.1f}" font-weight="bold" '
            f'fill="#283593">{escape(cluster.label)}</text></g>'
        )
    for source, target in picture.edges:
        x1, y1, c1x, c1y, c2x, c2y, x2, y2 = _edge_points(picture, source, target)
        out.append(
            f'<path class="edge" data-from="{escape(source)}" data-to="{escape(target)}" '
            f'd="M {x1:.1f} {y1:.1f} C {c1x:.1f} {c1y:.1f} {c2x:.1f} {c2y:.1f} {x2:.1f} '
            f'{y2:.1f}" fill="none" stroke="#555" stroke-width="1.1" marker-end="url(#arrow)"/>'
        )
    for box in picture.boxes.values():
        fill, stroke, style, _ = STYLES[box.state]
        width = 1.2
        if box.mark is not None:
            stroke, width = MARKS[box.mark][0], 3.0
        attributes = f' data-mark="{box.mark}"' if box.mark else ""
        rx = 12 if box.state in ("op", "input") else 4
        out.append(
            f'<g class="node" data-path="{escape(box.path)}" data-state="{box.state}" '
            f'data-calls="{box.calls}"{attributes}><title>{escape(box.path)}</title>'
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="{rx}" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{width}"{_dash(style)}/>'
        )
        for index, line in enumerate(box.lines):
            weight = ' font-weight="bold"' if index == 0 else ""
            out.append(
                f'<text x="{box.x + box.width / 2:.1f}" '
                f'y="{box.y + PAD_Y + (index + 1) * LINE_HEIGHT - 3:.1f}" '
                f'text-anchor="middle"{weight}>{escape(line)}</text>'
            )
        out.append("</g>")
    if picture.removed:
        y = picture.height - MARGIN - 4
        out.append(
            f'<text class="removed" x="{MARGIN}" y="{y:.1f}" fill="#b71c1c">'
            f"removed: {escape(', '.join(picture.removed))}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _dash(style: str) -> str:
    return {"dashed": ' stroke-dasharray="5 3"', "dotted": ' stroke-dasharray="2 2"'}.get(style, "")


def _cluster_fill(depth: int) -> str:
    return ("#eef0fb", "#e3e6f7", "#d8dcf3")[min(depth, 2)]


# -------------------------------------------------------------------------------- DOT


def to_dot(picture: Picture) -> str:
    """The picture for Graphviz: nested models as `cluster_` subgraphs."""
    ids = {path: f"n{index}" for index, path in enumerate(picture.boxes)}
    lines = [
        "digraph normify {",
        f"  label={_quote(picture.title)}; labelloc=t; rankdir=TB;",
        '  node [shape=box, style="filled,rounded", fontname="Helvetica", fontsize=10];',
        '  edge [color="#555555"];',
    ]

    def emit(name: str, indent: str) -> None:
        for child in picture.clusters[name].children:
            if child in picture.clusters:
                cluster = picture.clusters[child]
                lines.append(f"{indent}subgraph {_quote('cluster_' + child)} {{")
                lines.append(
                    f'{indent}  label={_quote(cluster.label)}; style="rounded,filled"; '
                    f'fillcolor="{_cluster_fill(child.count("/"))}"; color="#5c6bc0";'
                )
                emit(child, indent + "  ")
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{ids[child]} [{_dot_attributes(picture.boxes[child])}];")

    emit("", "  ")
    for source, target in picture.edges:
        lines.append(f"  {ids[source]} -> {ids[target]};")
    if picture.removed:
        text = "removed: " + ", ".join(picture.removed)
        lines.append(f'  removed [shape=note, label={_quote(text)}, fillcolor="#ffebee"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_attributes(box: Box) -> str:
    fill, stroke, style, _ = STYLES[box.state]
    styles = ["filled", "rounded"] + ([style] if style != "solid" else [])
    width = 1.0
    if box.mark is not None:
        stroke, width = MARKS[box.mark][0], 3.0
    attributes = {
        "label": "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in box.lines),
        "fillcolor": fill,
        "color": stroke,
        "style": ",".join(styles),
        "penwidth": f"{width:g}",
        "tooltip": box.path,
        "normify_state": box.state,
        "normify_calls": str(box.calls),
        "normify_path": box.path,
    }
    if box.mark:
        attributes["normify_mark"] = box.mark
    return ", ".join(
        f'{key}="{value}"' if key == "label" else f"{key}={_quote(value)}"
        for key, value in attributes.items()
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -------------------------------------------------------------------------------- PNG


PNG_SCALE = 2


def to_png(picture: Picture, path: Path) -> None:
    """Draw the picture with Pillow (raises ImportError when Pillow is missing)."""
    from PIL import Image, ImageDraw, ImageFont

    scale = PNG_SCALE
    image = Image.new("RGB", (int(picture.width * scale), int(picture.height * scale)), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=FONT_SIZE * scale)
        bold = font
        title = ImageFont.load_default(size=14 * scale)
    except TypeError:  # Pillow without FreeType: a fixed bitmap font
        font = bold = title = ImageFont.load_default()

    def s(*values: float) -> list[float]:
        return [v * scale for v in values]

    def at(x: float, y: float) -> tuple[float, float]:
        return (x * scale, y * scale)

    draw.text(at(MARGIN, MARGIN), picture.title, fill="black", font=title)
    for (key, fill, stroke, text), x, y in _legend_positions(picture):
        width = 3 if key in MARKS else 1
        draw.rectangle(s(x, y, x + LEGEND_SWATCH, y + LEGEND_SWATCH), fill=fill, outline=stroke,
                       width=width * scale)  # fmt: skip
        draw.text(at(x + LEGEND_SWATCH + 5, y), text, fill="black", font=font)
    for name, cluster in picture.clusters.items():
        if not name:
            continue
        draw.rounded_rectangle(
            s(cluster.x, cluster.y, cluster.x + cluster.width, cluster.y + cluster.height),
            radius=6 * scale, fill=_cluster_fill(name.count("/")), outline="#5c6bc0",
            width=scale,
        )  # fmt: skip
        draw.text(at(cluster.x + 8, cluster.y + 3), cluster.label, fill="#283593", font=bold)
    for source, target in picture.edges:
        points = _edge_points(picture, source, target)
        curve = _bezier(points)
        draw.line([tuple(s(*p)) for p in curve], fill="#555555", width=max(1, scale))
        _arrowhead(draw, curve[-2], curve[-1], scale)
    for box in picture.boxes.values():
        fill, stroke, style, _ = STYLES[box.state]
        width = 1
        if box.mark is not None:
            stroke, width = MARKS[box.mark][0], 3
        rect = s(box.x, box.y, box.x + box.width, box.y + box.height)
        radius = (12 if box.state in ("op", "input") else 4) * scale
        draw.rounded_rectangle(rect, radius=radius, fill=fill, outline=stroke, width=width * scale)
        if style != "solid":  # dashed and dotted borders: gaps painted over in the fill
            _gaps(draw, rect, fill, 5 if style == "dashed" else 2, scale)
        for index, line in enumerate(box.lines):
            y = box.y + PAD_Y + index * LINE_HEIGHT + 1
            draw.text(at(box.x + box.width / 2, y), line, fill="black", anchor="ma",
                      font=bold if index == 0 else font)  # fmt: skip
    if picture.removed:
        draw.text(at(MARGIN, picture.height - MARGIN - 14),
                  "removed: " + ", ".join(picture.removed), fill="#b71c1c", font=font)  # fmt: skip
    image.save(path, format="PNG")


def _bezier(points: tuple[float, ...], steps: int = 24) -> list[tuple[float, float]]:
    x1, y1, c1x, c1y, c2x, c2y, x2, y2 = points
    curve = []
    for step in range(steps + 1):
        t = step / steps
        u = 1 - t
        curve.append((
            u**3 * x1 + 3 * u * u * t * c1x + 3 * u * t * t * c2x + t**3 * x2,
            u**3 * y1 + 3 * u * u * t * c1y + 3 * u * t * t * c2y + t**3 * y2,
        ))  # fmt: skip
    return curve


def _arrowhead(
    draw: Any, before: tuple[float, float], tip: tuple[float, float], scale: int
) -> None:
    import math

    angle = math.atan2(tip[1] - before[1], tip[0] - before[0])
    length, spread = 7.0, 0.45
    points = [tip]
    for side in (-spread, spread):
        points.append((tip[0] - length * math.cos(angle + side),
                       tip[1] - length * math.sin(angle + side)))  # fmt: skip
    draw.polygon([(x * scale, y * scale) for x, y in points], fill="#555555")


def _gaps(draw: Any, rect: list[float], fill: str, dash: int, scale: int) -> None:
    x1, y1, x2, y2 = rect
    step = dash * 2 * scale
    for x in range(int(x1 + step), int(x2 - step), step):
        draw.line([(x, y1), (x + dash * scale, y1)], fill=fill, width=scale)
        draw.line([(x, y2), (x + dash * scale, y2)], fill=fill, width=scale)
    for y in range(int(y1 + step), int(y2 - step), step):
        draw.line([(x1, y), (x1, y + dash * scale)], fill=fill, width=scale)
        draw.line([(x2, y), (x2, y + dash * scale)], fill=fill, width=scale)


# ------------------------------------------------------------------------------ writing

FORMATS = (".svg", ".png", ".dot", ".gv")


def write_picture(
    report: AuditReport, path: str | os.PathLike[str], compare: AuditReport | None = None
) -> Path:
    """Draw `report`'s model to `path` (its suffix picks SVG, PNG or DOT); the path written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise NormifyError(
            f"cannot draw a {suffix or 'suffix-less'} file: use .svg, .png or .dot", path
        )
    if path.parent and not path.parent.is_dir():
        raise NormifyError("folder does not exist", path.parent)
    picture = picture_of(report, compare)
    if suffix == ".svg":
        _write_text(path, to_svg(picture))
    elif suffix in (".dot", ".gv"):
        _write_text(path, to_dot(picture))
    else:
        try:
            to_png(picture, path)
        except ImportError:
            dot = path.with_suffix(".dot")
            _write_text(dot, to_dot(picture))
            raise NormifyError(
                f"cannot draw a PNG without Pillow (pip install pillow), or render the DOT "
                f"with Graphviz (dot -Tpng {dot} -o {path}); wrote {dot}",
                path,
            ) from None
    return path


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise NormifyError(f"cannot write the picture ({error.strerror or error})", path) from None
