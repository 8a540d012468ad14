"""The HTML report: one self-contained file that opens offline in any browser.

:func:`render_report` asks :mod:`analytics.queries` its questions and lays the answers out as
a header (window, inputs, counts), the flow visualizer (:mod:`analytics.report_charts`), a
service graph, the policies board and tables of denied, unprotected and external flows, top
talkers and a time series.

Self-contained means plotly.js is inlined, nothing is fetched (no CDN, fonts or images), and a
Content-Security-Policy allows only the document's own scripts, by hash: a browser refuses any
network fetch or injected script even if escaping were ever missed. Every value from the store
is HTML-escaped (names come from the cluster). The output is byte-stable for the same store,
window and ``inputs``: fixed element ids, sorted rows, no clock reads.

A small inline script records errors and CSP violations and, once the charts are drawn, writes
what it saw (and how many segments each chart drew) as JSON into ``<pre id="selfcheck">``, so a
headless browser's ``--dump-dom`` can check the report without a driver.

>>> from analytics.db import connect
>>> html = render_report(connect("store"), Window(), inputs={"store": "store"})  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

import duckdb
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analytics import queries
from analytics.report_charts import (
    VERDICT_COLOURS,
    FlowKey,
    figure_json,
    graph_figure,
    sunburst_figure,
    timeseries_figure,
)
from analytics.window import Window

__all__ = ["CHART_IDS", "Column", "column", "html_table", "render_report"]

#: The ids of the chart elements, in drawing order (tests and the self-check read them).
CHART_IDS = ("tf-sunburst", "tf-graph", "tf-timeseries")
TABLE_ROWS = 500  # per table; the charts always show everything
TALKERS = 20
_NO_INPUTS: Mapping[str, str] = MappingProxyType({})

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row], object]]


def render_report(con: duckdb.DuckDBPyConnection, window: Window, *,
                  namespace: str | None = None, inputs: Mapping[str, str] = _NO_INPUTS,
                  title: str = "tierflow report",
                  changed: Collection[FlowKey] = frozenset(), lead: str = "") -> str:
    """The report as one HTML document. ``inputs`` (store path, filters, generation time...)
    is shown as given, in order; ``changed`` names flows a policy preview changes
    (:data:`analytics.report_charts.FlowKey`): they are drawn red and marked ⚠. ``lead`` is
    a section (HTML, already escaped) placed first, after the header."""
    data = _collect(con, window, namespace)
    figures = dict(zip(CHART_IDS, (sunburst_figure(data.flows, changed),
                                   graph_figure(data.flows, changed),
                                   timeseries_figure(data.timeseries)), strict=True))
    body = "\n".join((_header(title, window, namespace, inputs, data),
                      *((lead,) if lead else ()), *_sections(data)))
    return _document(title, body, figures)


@dataclass(frozen=True)
class _Data:
    flows: list[dict[str, Any]]
    denied: list[dict[str, Any]]
    unprotected: list[dict[str, Any]]
    external: list[dict[str, Any]]
    talkers: list[dict[str, Any]]
    timeseries: list[dict[str, Any]]
    board: list[dict[str, Any]]


def _collect(con: duckdb.DuckDBPyConnection, window: Window,
             namespace: str | None) -> _Data:
    # The board is cluster-wide (a policy's counters are not a namespace's); the rest follow
    # the namespace filter.
    return _Data(
        flows=_total(queries.flows(con, window, namespace=namespace).to_pylist()),
        denied=_total(queries.flows(con, window, namespace=namespace,
                                    action="deny").to_pylist()),
        unprotected=_total(queries.unprotected(con, window, namespace=namespace).to_pylist()),
        external=_total(queries.external(con, window, namespace=namespace).to_pylist(),
                        lambda r: (-(r["bytes"] or 0),)),
        talkers=queries.talkers(con, window, limit=TALKERS, namespace=namespace).to_pylist(),
        timeseries=queries.timeseries(con, window, namespace=namespace).to_pylist(),
        board=_total(queries.board(con, window).to_pylist(), _board_order))


def _sortable(value: object) -> tuple[bool, object]:
    return (value is not None, value)  # None first, and never compared with a value


def _total(rows: list[dict[str, Any]],
           lead: Callable[[Row], tuple[object, ...]] = lambda row: ()) -> list[dict[str, Any]]:
    """Rows ordered by ``lead`` (the query's own ORDER BY, where it is not the column order)
    and then by every column: the queries' orders leave ties, which DuckDB's parallel sort
    returns in any order, and the report must be byte-stable."""
    return sorted(rows, key=lambda r: (lead(r), tuple(_sortable(v) for v in r.values())))


def _board_order(row: Row) -> tuple[object, ...]:
    # board.sql: ORDER BY tier = '__PROFILE__', tier, namespace NULLS FIRST, policy, rule
    return (row["tier"] == "__PROFILE__", row["tier"], _sortable(row["namespace"]),
            row["policy"], row["rule"])


# Values and tables ----------------------------------------------------------------------------

def _plain(value: object) -> str:
    """A cell's text, escaped: integers with thousands separators, times in UTC ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return html.escape(str(value))


def _col(heading: str, key: str) -> Column:
    return (heading, lambda row: row[key])


def _pair(heading: str, first: str, second: str) -> Column:
    return (heading, lambda row: f"{row[first] or 0:,} / {row[second] or 0:,}")


def html_table(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """An HTML table of ``rows``, one ``(heading, getter)`` column each, values escaped."""
    return _table(rows, columns)


def column(heading: str, key: str) -> Column:
    return _col(heading, key)


def _table(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    if not rows:
        return '<p class="empty">None in this window.</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in columns)
    body = "\n".join("<tr>" + "".join(f"<td>{_plain(get(row))}</td>" for _, get in columns)
                     + "</tr>" for row in rows[:TABLE_ROWS])
    more = len(rows) - TABLE_ROWS
    note = (f'<p class="more">{more:,} more rows not shown (query them with tierflow sql).'
            "</p>" if more > 0 else "")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>{note}"


_FLOW_COLUMNS: tuple[Column, ...] = (
    _col("source namespace", "source_namespace"), _col("source", "source_name_aggr"),
    _col("dest namespace", "dest_namespace"), _col("dest", "dest_name_aggr"),
    _col("type", "dest_type"), _col("port", "dest_port"), _col("proto", "proto"),
    _col("reporter", "reporter"), _col("connections", "connections"),
    _col("packets", "packets"), _pair("bytes in / out", "bytes_in", "bytes_out"),
    _col("domains", "dest_domains"), _col("first seen", "first_seen"),
    _col("last seen", "last_seen"))

_UNPROTECTED_COLUMNS: tuple[Column, ...] = (
    _col("namespace", "namespace"), _col("workload", "workload"), _col("reporter", "reporter"),
    _col("source namespace", "source_namespace"), _col("source", "source_name_aggr"),
    _col("dest namespace", "dest_namespace"), _col("dest", "dest_name_aggr"),
    _col("type", "dest_type"), _col("port", "dest_port"), _col("proto", "proto"),
    _col("connections", "connections"), _col("bytes", "bytes"),
    _col("first seen", "first_seen"), _col("last seen", "last_seen"))

_EXTERNAL_COLUMNS: tuple[Column, ...] = (
    _col("namespace", "source_namespace"), _col("workload", "source_name_aggr"),
    _col("destination", "destination"), _col("type", "dest_type"), _col("port", "dest_port"),
    _col("proto", "proto"), _col("action", "action"), _col("connections", "connections"),
    _col("bytes", "bytes"), _col("first seen", "first_seen"), _col("last seen", "last_seen"))

_TALKER_COLUMNS: tuple[Column, ...] = (
    _col("namespace", "namespace"), _col("workload", "workload"),
    _col("bytes sent", "bytes_sent"), _col("bytes received", "bytes_received"),
    _col("connections", "connections"), _col("denied connections", "denied_connections"))

_TIMESERIES_COLUMNS: tuple[Column, ...] = (
    _col("interval start", "start_time"), _col("records", "records"),
    _col("allowed connections", "allowed_connections"),
    _col("denied connections", "denied_connections"), _col("bytes", "bytes"))


def _board_columns() -> tuple[Column, ...]:
    counters = tuple(
        _pair(f"{action} {what} in / out", f"{action}_{what}_in", f"{action}_{what}_out")
        for action in ("allowed", "denied", "passed")
        for what in ("packets", "bytes", "connections"))
    return (_col("tier", "tier"), _col("kind", "kind"), _col("namespace", "namespace"),
            _col("policy", "policy"), _col("direction", "direction"), _col("rule", "rule"),
            _col("staged", "staged"),
            *counters, _col("first hit", "first_hit"), _col("last hit", "last_hit"))


# Sections -------------------------------------------------------------------------------------

def _header(title: str, window: Window, namespace: str | None,
            inputs: Mapping[str, str], data: _Data) -> str:
    shown = {"window": window.describe(), "namespace": namespace or "all namespaces",
             **inputs}
    counts = {
        "records in the window": sum(r["records"] for r in data.timeseries),
        "flows (source workload, peer, port, verdict, reporter)": len(data.flows),
        "denied flows": len(data.denied), "unprotected flows": len(data.unprotected),
        "external egress destinations": len(data.external),
        "policy rules on the board": len(data.board)}
    return (f"<header>\n<h1>{html.escape(title)}</h1>\n"
            f"{_definitions(shown)}\n{_definitions(counts)}\n{_nav()}\n</header>")


def _definitions(items: Mapping[str, object]) -> str:
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{_plain(v)}</dd>"
                   for k, v in items.items())
    return f"<dl>{rows}</dl>"


_SECTIONS = (("flows", "Flow visualizer"), ("graph", "Service graph"),
             ("board", "Policies board"), ("denied", "Denied flows"),
             ("unprotected", "Unprotected flows"), ("external", "External egress"),
             ("talkers", "Top talkers"), ("timeseries", "Time series"))


def _nav() -> str:
    links = " · ".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in _SECTIONS)
    return f"<nav>{links}</nav>"


def _legend() -> str:
    swatches = "".join(f'<span class="swatch" style="background:{colour}"></span>{verdict} '
                       for verdict, colour in VERDICT_COLOURS.items())
    return f'<p class="legend">{swatches}· ⚠ changed by the preview (red, outlined)</p>'


def _section(anchor: str, content: str, note: str = "") -> str:
    name = dict(_SECTIONS)[anchor]
    text = f'<p class="note">{note}</p>\n' if note else ""
    return f'<section id="{anchor}">\n<h2>{name}</h2>\n{text}{content}\n</section>'


def _chart(chart_id: str) -> str:
    return f'<div id="{chart_id}" class="chart"></div>'


def _sections(data: _Data) -> tuple[str, ...]:
    return (
        _section("flows", _legend() + _chart("tf-sunburst"),
                 "Namespace → source workload (replica-set prefix) → peer. Click a segment "
                 "to zoom in, the centre to zoom out; hover for connections and bytes as "
                 "each reporter saw them."),
        _section("graph", _chart("tf-graph"),
                 "Workloads by namespace and external peers; an edge per source and "
                 "destination, arrow towards the destination, coloured by verdict."),
        _section("board", _table(data.board, _board_columns()),
                 "Per tier, policy and rule, all namespaces. Rule -1 is the end of the tier."),
        _section("denied", _table(data.denied, _FLOW_COLUMNS)),
        _section("unprotected", _table(data.unprotected, _UNPROTECTED_COLUMNS),
                 "Allowed by a profile: no policy decided."),
        _section("external", _table(data.external, _EXTERNAL_COLUMNS)),
        _section("talkers", _table(data.talkers, _TALKER_COLUMNS)),
        _section("timeseries", _chart("tf-timeseries")
                 + _table(data.timeseries, _TIMESERIES_COLUMNS),
                 "Records from or to the namespace filter, per flush interval."))


# The document ---------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 1.5em; color: #222; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; }
dt { color: #555; } dd { margin: 0; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tbody tr:nth-child(even) { background: #fafafa; }
.chart { width: 100%; } .note, .empty, .more { color: #555; }
.swatch { display: inline-block; width: 1em; height: 1em; margin: 0 .3em 0 .6em;
          vertical-align: middle; }
"""

_SELFCHECK_START = """"use strict";
window.tfSelfcheck = {errors: [], violations: []};
window.addEventListener("error", function (e) {
  tfSelfcheck.errors.push(e.message ? e.message + " at line " + e.lineno
                          : "failed to load " + (e.target && (e.target.src || e.target.href)));
}, true);
window.addEventListener("unhandledrejection", function (e) {
  tfSelfcheck.errors.push("unhandled rejection: " + e.reason);
});
document.addEventListener("securitypolicyviolation", function (e) {
  tfSelfcheck.violations.push(e.violatedDirective + " " + e.blockedURI);
});
(function () {
  var original = console.error;
  console.error = function () {
    tfSelfcheck.errors.push(Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
})();
"""

_PLOT = """"use strict";
(function () {
  var ids = %s;
  var config = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                showEditInChartStudio: false, showTips: false};
  function report(charts) {
    var resources = performance.getEntriesByType("resource").map(function (r) {
      return r.name;
    });
    document.getElementById("selfcheck").textContent = JSON.stringify({
      errors: tfSelfcheck.errors, violations: tfSelfcheck.violations, charts: charts,
      resources: resources, scripts: document.scripts.length, done: true});
  }
  function plot(id) {
    var figure = JSON.parse(document.getElementById(id + "-figure").textContent);
    return Plotly.newPlot(id, figure.data, figure.layout, config);
  }
  function measure(id) {
    var el = document.getElementById(id);
    return {traces: el._fullData.length, ids: (el.data[0].ids || []).length,
            surfaces: el.querySelectorAll("path.surface").length,
            points: el.querySelectorAll(".point").length};
  }
  var drawing;
  try {
    drawing = Promise.all(ids.map(plot));
  } catch (e) {
    tfSelfcheck.errors.push(String(e));
    report({});
    return;
  }
  drawing.then(function () {
    var charts = {};
    ids.forEach(function (id) { charts[id] = measure(id); });
    report(charts);
  }, function (e) {
    tfSelfcheck.errors.push("plot failed: " + e);
    report({});
  });
})();
"""


def _script_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def _csp(scripts: Sequence[str]) -> str:
    """Only these scripts run; nothing loads from anywhere (images only as data: URLs, which
    plotly's "download as PNG" uses)."""
    hashes = " ".join(_script_hash(s) for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
            "img-src data: blob:; base-uri 'none'; form-action 'none'")


def _document(title: str, body: str, figures: Mapping[str, go.Figure]) -> str:
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    plot_js = _PLOT % json.dumps(list(figures))  # our own constant ids
    data = "\n".join(f'<script type="application/json" id="{cid}-figure">'
                     f"{figure_json(fig)}</script>" for cid, fig in figures.items())
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" '
        f'content="{_csp((_SELFCHECK_START, plotly_js, plot_js))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_SELFCHECK_START}</script>\n</head>\n<body>\n{body}\n"
        f'<pre id="selfcheck" hidden></pre>\n{data}\n'
        f"<script>{plotly_js}</script>\n<script>{plot_js}</script>\n</body>\n</html>\n")

