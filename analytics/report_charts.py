"""The report's charts as plotly figures: the flow visualizer (a sunburst of namespace →
replica-set prefix → peer), the service graph and the time series.

Every text that plotly renders is HTML-escaped here, because plotly reads labels and hover
texts as its own small HTML dialect (``<b>``, ``<br>``, ``<a href>``): a namespace called
``<b>x`` must show as those characters, not as bold ``x``. Plotly decodes the entities again
when it draws, into text nodes.

Figures are built from the query tables in their sorted row order, with no randomness, so the
same store gives the same JSON byte for byte:

>>> figure_json(timeseries_figure([])).startswith('{"data":')
True
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["VERDICT_COLOURS", "FlowKey", "Tally", "figure_json", "flow_key", "graph_figure",
           "peer_label", "sunburst_figure", "sunburst_ids", "timeseries_figure"]

#: A flow as the visualizer and the (future) policy preview name it: source namespace, source
#: replica-set prefix, dest namespace, dest name_aggr, dest port (None for ICMP), protocol.
FlowKey = tuple[str, str, str, str, int | None, str]

VERDICT_COLOURS = {"allowed": "#2ca02c", "denied": "#d62728", "mixed": "#f0a202"}
_CHANGED_LINE = {"colour": "#000000", "width": 3}
_CHANGED_MARK = "\u26a0 "  # ⚠ before the label of a segment whose verdict a preview changes
_NAMESPACE_COLOURS = ("#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
                      "#7f7f7f", "#aec7e8", "#c5b0d5", "#9edae5")
_EXTERNAL_COLOUR = "#555555"
_TEMPLATE = "plotly_white"  # named, so the global pio.templates.default cannot change output


def _text(value: object) -> str:
    """A data value as plotly text: ``&``, ``<`` and ``>`` escaped (plotly decodes only
    those and numeric entities; a quote outside a tag is plain text to it), None as ``-``."""
    return html.escape("-" if value is None else str(value), quote=False)


def flow_key(row: Mapping[str, Any]) -> FlowKey:
    return (row["source_namespace"], row["source_name_aggr"], row["dest_namespace"],
            row["dest_name_aggr"], row["dest_port"], row["proto"])


def _endpoint_label(namespace: str | None, name: str | None, kind: str | None) -> str:
    """``ns/name`` for namespaced endpoints; ``networkset:name`` for a global network set
    (Calico type ``ns``), the bare name for ``pub``/``pvt`` and host endpoints."""
    if namespace not in (None, "", "-"):
        return f"{namespace}/{name}"
    return f"networkset:{name}" if kind == "ns" else str(name)


def peer_label(row: Mapping[str, Any]) -> str:
    """``kube-system/coredns-5d78c9869d-*:53/udp`` (no ``:port`` for ICMP). Not escaped."""
    port = "" if row["dest_port"] is None else f":{row['dest_port']}"
    dest = _endpoint_label(row["dest_namespace"], row["dest_name_aggr"], row["dest_type"])
    return f"{dest}{port}/{row['proto']}"


def _namespace_label(namespace: str | None) -> str:
    # Calico writes "-" for non-namespaced endpoints (pub/pvt, global network sets, hosts);
    # parentheses cannot occur in a Kubernetes namespace name, so this cannot collide.
    return "(global)" if namespace in (None, "", "-") else namespace


@dataclass
class Tally:
    """What a segment or an edge summarises, per reporter (src and dst both report a flow
    that crosses two workloads, so their counts are shown side by side, never added)."""

    connections: dict[str, int] = field(default_factory=dict)
    bytes_in: dict[str, int] = field(default_factory=dict)
    bytes_out: dict[str, int] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)
    protos: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    changed: bool = False

    def add(self, row: Mapping[str, Any], changed: bool = False) -> None:
        reporter = row["reporter"]
        for name in ("connections", "bytes_in", "bytes_out"):
            counts = getattr(self, name)
            counts[reporter] = counts.get(reporter, 0) + (row[name] or 0)
        if row["dest_port"] is not None:
            self.ports.add(row["dest_port"])
        self.protos.add(row["proto"])
        self.actions.add(row["action"])
        self.changed = self.changed or changed

    @property
    def verdict(self) -> str:
        """allowed, denied, or mixed (some records allowed, some denied, e.g. allowed out by
        the source and denied in by the destination)."""
        if self.actions <= {"allow"}:
            return "allowed"
        return "denied" if self.actions == {"deny"} else "mixed"

    @property
    def colour(self) -> str:
        return VERDICT_COLOURS["denied" if self.changed else self.verdict]

    @property
    def size(self) -> int:
        """Connections counted once (the busier reporter), at least 1 so every flow shows."""
        return max([1, *self.connections.values()])

    def hover(self, title: str) -> str:
        lines = [f"<b>{_text(title)}</b>", f"verdict: {self.verdict}"]
        if self.changed:
            lines.append("<b>changed by the preview</b>")
        for reporter in sorted(self.connections):
            lines.append(f"{_text(reporter)}: {self.connections[reporter]:,} connections, "
                         f"{self.bytes_in[reporter]:,} B in, {self.bytes_out[reporter]:,} B out")
        lines.append("ports: " + (", ".join(str(p) for p in sorted(self.ports)) or "-"))
        lines.append("protocols: " + _text(", ".join(sorted(self.protos))))
        lines.append("reporter: " + _text(", ".join(sorted(self.connections))))
        return "<br>".join(lines)


@dataclass
class _Segment:
    label: str
    parent: str
    tally: Tally = field(default_factory=Tally)
    value: int = 0


def _segment_ids(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """Ids of the namespace, prefix and peer segments: JSON paths, so distinct keys never
    collide whatever characters the names hold."""
    ns, prefix = row["source_namespace"], row["source_name_aggr"]
    peer = [row["dest_namespace"], row["dest_name_aggr"], row["dest_type"], row["dest_port"],
            row["proto"]]
    return (json.dumps([ns]), json.dumps([ns, prefix]), json.dumps([ns, prefix, *peer]))


def _segments(rows: Iterable[Mapping[str, Any]],
              changed: Collection[FlowKey]) -> dict[str, _Segment]:
    segments: dict[str, _Segment] = {}
    for row in rows:
        ns_id, prefix_id, peer_id = _segment_ids(row)
        labels = (_namespace_label(row["source_namespace"]), row["source_name_aggr"],
                  peer_label(row))
        is_changed = flow_key(row) in changed
        # Only the peer is marked changed: its namespace and prefix keep their verdict colour.
        for sid, label, parent, mark in zip((ns_id, prefix_id, peer_id), labels,
                                            ("", ns_id, prefix_id), (False, False, is_changed),
                                            strict=True):
            segments.setdefault(sid, _Segment(str(label), parent)).tally.add(row, mark)
    # Parents were inserted before their children: walking backwards, every child's value is
    # final before it is added to its parent, so each parent is exactly the sum of its
    # children (plotly's branchvalues="total" drops a parent that is less).
    parents = {s.parent for s in segments.values()}
    for sid, segment in reversed(segments.items()):
        if sid not in parents:
            segment.value = segment.tally.size
        if segment.parent:
            segments[segment.parent].value += segment.value
    return segments


def sunburst_ids(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The segment ids, in drawing order: one per namespace, prefix and peer."""
    return list(_segments(rows, ()))


def sunburst_figure(rows: Iterable[Mapping[str, Any]],
                    changed: Collection[FlowKey] = ()) -> go.Figure:
    """The flow visualizer from :func:`analytics.queries.flows` rows. A peer whose
    :func:`flow_key` is in ``changed`` (the preview's hook) is drawn red, outlined, with ⚠."""
    segments = _segments(rows, changed)
    items = list(segments.items())
    trace = go.Sunburst(
        ids=[sid for sid, _ in items],
        parents=[s.parent for _, s in items],
        labels=[(_CHANGED_MARK if s.tally.changed else "") + _text(s.label) for _, s in items],
        values=[s.value for _, s in items],
        branchvalues="total",
        hovertext=[s.tally.hover(s.label) for _, s in items],
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"colors": [s.tally.colour for _, s in items],
                "line": {"color": [_CHANGED_LINE["colour"] if s.tally.changed else "#ffffff"
                                   for _, s in items],
                         "width": [_CHANGED_LINE["width"] if s.tally.changed else 1
                                   for _, s in items]}},
        insidetextorientation="radial", sort=False)
    return go.Figure(data=[trace], layout=_layout(height=720))


def _layout(**extra: Any) -> go.Layout:
    return go.Layout(template=_TEMPLATE, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                     **extra)


def figure_json(figure: go.Figure) -> str:
    """The figure as JSON that is safe inside ``<script type="application/json">``: ``<``,
    ``>`` and ``&`` are written as ``\\u003c`` etc., so no data can close the element."""
    text = str(pio.to_json(figure, validate=False, pretty=False, engine="json"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# The service graph ---------------------------------------------------------------------------

_Node = tuple[bool, str, str]  # (external?, namespace, label): sorts workloads by namespace


def _node(row: Mapping[str, Any], side: str) -> _Node:
    kind, ns = row[f"{side}_type"], row[f"{side}_namespace"]
    external = kind in ("net", "ns")
    label = _endpoint_label(ns, row[f"{side}_name_aggr"], kind)
    return (external, "" if external else _namespace_label(ns), label)


def _edges(rows: Iterable[Mapping[str, Any]],
           changed: Collection[FlowKey]) -> dict[tuple[_Node, _Node], Tally]:
    edges: dict[tuple[_Node, _Node], Tally] = {}
    for row in rows:
        key = (_node(row, "source"), _node(row, "dest"))
        edges.setdefault(key, Tally()).add(row, flow_key(row) in changed)
    return edges


def _circle(nodes: Iterable[_Node]) -> dict[_Node, tuple[float, float]]:
    """Nodes on a unit circle, sorted, with an empty slot between namespaces so that each
    namespace (and the external peers) sits on its own arc."""
    slots: list[_Node | None] = []
    for node in sorted(set(nodes)):
        if slots and slots[-1] is not None and slots[-1][:2] != node[:2]:
            slots.append(None)
        slots.append(node)
    step = 2 * math.pi / max(len(slots), 1)
    return {node: (round(math.cos(i * step), 6), round(math.sin(i * step), 6))
            for i, node in enumerate(slots) if node is not None}


def _edge_traces(edges: Mapping[tuple[_Node, _Node], Tally],
                 where: Mapping[_Node, tuple[float, float]]) -> list[go.Scatter]:
    traces = []
    for verdict, colour in VERDICT_COLOURS.items():
        chosen = [(k, t) for k, t in edges.items()
                  if ("denied" if t.changed else t.verdict) == verdict]
        xs: list[float | None] = []
        ys: list[float | None] = []
        for (src, dst), _ in chosen:
            xs += [where[src][0], where[dst][0], None]
            ys += [where[src][1], where[dst][1], None]
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", name=verdict, hoverinfo="skip",
                                 line={"color": colour, "width": 1.5}, legendgroup=verdict))
        traces.append(_arrow_trace(chosen, where, verdict, colour))
    return traces


def _arrow_trace(chosen: list[tuple[tuple[_Node, _Node], Tally]],
                 where: Mapping[_Node, tuple[float, float]], verdict: str,
                 colour: str) -> go.Scatter:
    """Arrowheads two thirds of the way along each edge, carrying the edge's hover text."""
    xs, ys, angles, hovers = [], [], [], []
    for (src, dst), tally in chosen:
        (x0, y0), (x1, y1) = where[src], where[dst]
        xs.append(round(x0 + (x1 - x0) * 2 / 3, 6))
        ys.append(round(y0 + (y1 - y0) * 2 / 3, 6))
        # plotly's marker angle is clockwise from "up"; the axes are drawn to equal scale.
        angles.append(round(math.degrees(math.atan2(x1 - x0, y1 - y0)), 3))
        hovers.append(tally.hover(f"{src[2]} → {dst[2]}"))
    return go.Scatter(x=xs, y=ys, mode="markers", name=verdict, showlegend=False,
                      legendgroup=verdict, hovertext=hovers,
                      hovertemplate="%{hovertext}<extra></extra>",
                      marker={"symbol": "arrow", "size": 11, "angle": angles,
                              "color": colour})


def _outside(x: float, y: float) -> str:
    """Label placement away from the circle's centre, so labels do not cross the edges."""
    if abs(x) > 0.35:
        return "middle right" if x > 0 else "middle left"
    return "top center" if y > 0 else "bottom center"


def _node_trace(where: Mapping[_Node, tuple[float, float]]) -> go.Scatter:
    namespaces = sorted({n[1] for n in where if not n[0]})
    palette = {ns: _NAMESPACE_COLOURS[i % len(_NAMESPACE_COLOURS)]
               for i, ns in enumerate(namespaces)}
    nodes = list(where)
    return go.Scatter(
        x=[where[n][0] for n in nodes], y=[where[n][1] for n in nodes], mode="markers+text",
        name="workloads", text=[_text(n[2]) for n in nodes],
        textposition=[_outside(*where[n]) for n in nodes],
        hovertext=[f"<b>{_text(n[2])}</b><br>" + ("external peer" if n[0] else "workload")
                   for n in nodes],
        hovertemplate="%{hovertext}<extra></extra>", showlegend=False,
        marker={"size": 14, "line": {"color": "#ffffff", "width": 1},
                "color": [_EXTERNAL_COLOUR if n[0] else palette[n[1]] for n in nodes],
                "symbol": ["diamond" if n[0] else "circle" for n in nodes]})


def graph_figure(rows: Iterable[Mapping[str, Any]],
                 changed: Collection[FlowKey] = ()) -> go.Figure:
    """Workloads (circles, one colour per namespace) and external peers (grey diamonds) on a
    circle, one edge per (source, destination) pair coloured by verdict."""
    edges = _edges(rows, changed)
    where = _circle(node for pair in edges for node in pair)
    axis = {"visible": False, "range": [-1.7, 1.7]}
    layout = _layout(height=720, hovermode="closest", legend={"orientation": "h"},
                     xaxis=axis, yaxis={**axis, "scaleanchor": "x", "scaleratio": 1})
    return go.Figure(data=[*_edge_traces(edges, where), _node_trace(where)], layout=layout)


def timeseries_figure(rows: Iterable[Mapping[str, Any]]) -> go.Figure:
    """Allowed and denied connections per flush interval, stacked."""
    rows = list(rows)
    times = [r["start_time"].strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows]
    bars = [go.Bar(x=times, y=[r[f"{v}_connections"] for r in rows], name=f"{v} connections",
                   marker={"color": VERDICT_COLOURS[v]})
            for v in ("allowed", "denied")]
    layout = _layout(height=280, barmode="stack", legend={"orientation": "h"},
                     xaxis={"type": "category"})
    return go.Figure(data=bars, layout=layout)
