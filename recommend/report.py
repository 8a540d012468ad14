"""The report of a recommendation, in Markdown or as one self-contained HTML page: the replay
proof, then per policy each rule with the flows behind it (peer, port, connections, bytes,
first and last seen) and what the policy allows beyond them. Deterministic: the same run
gives the same bytes.

The content is built once as a list of blocks (heading, paragraph, list, table); each
format only renders blocks.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from recommend.engine import Recommendation
from recommend.model import Observation, Rule, WorkloadPolicy
from recommend.policies import policy_name

__all__ = ["html_page", "markdown"]


@dataclass(frozen=True, slots=True)
class _Block:
    kind: str  # h1 | h2 | p | ul | table
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def markdown(rec: Recommendation, window: str | None = None) -> str:
    """The report as Markdown; ``window`` describes the lookback (``Window.describe()``)."""
    out = []
    for b in _blocks(rec, window):
        if b.kind in ("h1", "h2"):
            out.append(f"{'#' * int(b.kind[1])} {b.text}")
        elif b.kind == "p":
            out.append(_md(b.text))
        elif b.kind == "ul":
            out.append("\n".join(f"- {_md(i)}" for i in b.items))
        else:
            lines = [_md_row(b.header), "|" + "---|" * len(b.header)]
            out.append("\n".join(lines + [_md_row(r) for r in b.rows]))
    return "\n\n".join(out) + "\n"


def html_page(rec: Recommendation, window: str | None = None) -> str:
    """The report as one HTML page that needs nothing else (no scripts, inline style)."""
    body = []
    for b in _blocks(rec, window):
        if b.kind in ("h1", "h2", "p"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "ul":
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items)
                        + "</ul>")
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                           + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return _PAGE.format(body="\n".join(body))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>tierflow policy recommendation</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:90em}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}}th{{background:#f4f4f4}}</style></head>
<body>
{body}
</body></html>
"""


def _blocks(rec: Recommendation, window: str | None) -> list[_Block]:
    req = rec.request
    where = req.namespace or "all namespaces"
    if req.workload:
        where += f", workloads starting with {req.workload!r}"
    out = [_Block("h1", "tierflow policy recommendation"), _Block("ul", items=(
        f"scope: {req.scope} ({where})",
        f"tier: {rec.tier}; format: {req.format}",
        f"window: {window or req.window.describe()}",
        f"learnt from {rec.observations} observed workload/peer/port group(s); "
        f"{len(rec.policies)} policy(ies), {len(rec.outputs)} file(s)"))]
    out += _proof(rec)
    notes = dict(rec.beyond)
    for p in rec.policies:
        out += _policy(p, rec.tier, notes.get(f"{p.target.namespace}/{policy_name(p, rec.tier)}",
                                              ()))
    if rec.warnings:
        out += [_Block("h2", "Warnings"), _Block("ul", items=rec.warnings)]
    return out


def _proof(rec: Recommendation) -> list[_Block]:
    proof = rec.proof
    verdict = "PASSED" if proof.passed else "FAILED"
    out = [_Block("h2", "Replay proof"),
           _Block("p", f"{verdict}: {proof.summary()} with the existing policies in front and "
                  "the recommendation enforced.")]
    if proof.failures:
        rows = tuple(_cells(f"{f.namespace}/{f.workload}", f.direction,
                            f.peer + (f" ({', '.join(f.domains)})" if f.domains else ""),
                            f.proto + ("" if f.port is None else f"/{f.port}"), f.action,
                            f.deciding, f.connections) for f in proof.failures)
        out.append(_Block("table", header=("workload", "direction", "peer", "protocol/port",
                                           "verdict", "decided by", "connections"), rows=rows))
    return out


def _policy(p: WorkloadPolicy, tier: str, notes: Sequence[str]) -> list[_Block]:
    t = p.target
    numbered = [(f"{d} {i}", r) for d, rules in (("ingress", p.ingress), ("egress", p.egress))
                for i, r in enumerate(rules)]
    rules = tuple(_cells(label, r.category.title + (" (DNS)" if r.dns else ""), r.protocol,
                         ", ".join(map(str, r.ports)) or "-", r.peer.describe(),
                         sum(o.connections for o in r.evidence),
                         sum(o.bytes for o in r.evidence)) for label, r in numbered)
    flows = tuple(row for label, r in numbered for row in _evidence(label, r))
    out = [_Block("h2", f"{t.namespace}/{policy_name(p, tier)}"),
           _Block("p", f"Applies to {t.selector} ({t.scope}: {', '.join(t.workloads)})."),
           _Block("table", header=("rule", "category", "protocol", "ports", "peer",
                                   "connections", "bytes"), rows=rules),
           _Block("p", "Flows behind the rules:"),
           _Block("table", header=("rule", "peer", "protocol/port", "connections", "bytes",
                                   "first seen", "last seen"), rows=flows)]
    if notes:
        out += [_Block("p", "Allowed beyond what was observed:"),
                _Block("ul", items=tuple(notes))]
    return out


def _evidence(label: str, rule: Rule) -> Iterable[tuple[str, ...]]:
    if not rule.evidence:
        return [_cells(label, "(none: added so that DNS keeps working)", "", "", "", "", "")]
    return [_cells(label, _peer(o), o.proto + ("" if o.port is None else f"/{o.port}"),
                   o.connections, o.bytes, _time(o.first_seen), _time(o.last_seen))
            for o in rule.evidence]


def _peer(o: Observation) -> str:
    text = str(o.peer)
    if o.domains:
        text += f" ({', '.join(o.domains)})"
    if o.service:
        text += f" via service {o.service[0]}/{o.service[1]}"
    return text


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


def _cells(*values: object) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")
