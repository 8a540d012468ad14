"""Preview's two promises, for random policy sets and traffic:

* a change that leaves the policy set as it was — every policy deleted and created again,
  every tier put again — changes no flow's verdict or trace;
* for any change, each record's verdict before and after is what the per-record reference
  evaluator says (``BatchEvaluator.evaluate_row``), with Calico's destination-record rule:
  a destination record whose source record turns from allow to deny is denied at the
  source.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_recommend_scenarios import WINDOW, flow, side, wep, write_store

from analytics.db import connect
from analytics.preview import preview
from ingest.inventory import Inventory
from policy import Evaluator, PolicySet, load_text
from policy.batch import BatchEvaluator
from policy.changes import Change, apply_changes

ENDPOINTS = [
    wep("shop", "web-5d8f7c9b6d-*", {"app": "web", "tier": "front"}),
    wep("shop", "api-7c9d8b6f5c-*", {"app": "api", "tier": "back"}),
    wep("ops", "db-6b5c4d3f2a-*", {"app": "db", "tier": "back"}),
    wep("ops", "tool-5a4b3c2d1e-*", {"role": "tool"}),
    side("net", "-", "pub", ip="203.0.113.7"),
    side("net", "-", "pvt"),
]
SELECTORS = ["all()", "app == 'web'", "app in {'api', 'db'}", "has(tier)", "tier == 'back'",
             "!has(app)", "role == 'tool' || app == 'web'"]
PEER = st.one_of(
    st.fixed_dictionaries({"selector": st.sampled_from(SELECTORS)}),
    st.fixed_dictionaries({"nets": st.sampled_from([["10.0.0.0/8"], ["203.0.113.0/24"],
                                                    ["0.0.0.0/0"]])}),
    st.fixed_dictionaries({"notSelector": st.sampled_from(SELECTORS)}),
    st.just({}),
)


@st.composite
def rules(draw: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass"]))}
    if draw(st.booleans()):
        rule["protocol"] = draw(st.sampled_from(["TCP", "UDP"]))
        dest = draw(PEER)
        if draw(st.booleans()):
            dest = {**dest, "ports": draw(st.lists(st.sampled_from([53, 80, 443, 8080]),
                                                   min_size=1, max_size=2, unique=True))}
        rule["destination"] = dest
    if draw(st.booleans()):
        rule["source"] = draw(PEER)
    return rule


@st.composite
def policy_docs(draw: Any, name: str) -> dict[str, Any]:
    glob = draw(st.booleans())
    tier = draw(st.sampled_from(["default", "security"]))
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    spec: dict[str, Any] = {"tier": tier, "order": draw(st.integers(0, 3)) * 10,
                            "selector": draw(st.sampled_from(SELECTORS)), "types": types}
    for t in types:
        spec[t.lower()] = draw(st.lists(rules(), max_size=3))
    meta: dict[str, Any] = {"name": f"{tier}.{name}"}
    if not glob:
        meta["namespace"] = draw(st.sampled_from(["shop", "ops"]))
    return {"apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy" if glob else "NetworkPolicy",
            "metadata": meta, "spec": spec}


TIER = {"apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "security"}, "spec": {"order": 100}}


@st.composite
def policy_sets(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 4))
    return [TIER, *(draw(policy_docs(f"p{i}")) for i in range(n))]


@st.composite
def traffic(draw: Any) -> list[dict[str, Any]]:
    """Records with distinct (reporter, source, dest, port, proto): at most one row each."""
    picks = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(ENDPOINTS) - 1),
                                    st.sampled_from([53, 80, 443, 8080]),
                                    st.sampled_from(["tcp", "udp"]),
                                    st.sampled_from(["both", "both", "src", "dst"])),
                          min_size=1, max_size=8,
                          unique_by=lambda t: (t[0], t[1], t[2], t[3])))
    rows = []
    for local, peer, port, proto, reporters in picks:
        src, dst = ENDPOINTS[local], ENDPOINTS[peer]
        if peer == local:
            continue
        for reporter in (("src", "dst") if reporters == "both" else (reporters,)):
            if reporter == "dst" and dst["type"] != "wep":
                continue
            rows.append(flow(src, dst, port, proto, reporter=reporter))
    return rows or [flow(ENDPOINTS[0], ENDPOINTS[1], 80)]


def _text(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(policy_sets(), traffic())
def test_an_unchanged_policy_set_changes_nothing(docs: list[dict[str, Any]],
                                                 rows: list[dict[str, Any]]) -> None:
    current = PolicySet.from_documents(load_text(_text(docs)))
    changes = [Change.delete(f"{d['kind']}/{d['metadata'].get('namespace', '')}/"
                             f"{d['metadata']['name']}".replace("//", "/"))
               for d in docs if d["kind"] != "Tier"]
    changes += [Change.put(d) for d in load_text(_text(docs))]
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "store", rows)
        p = preview(connect(store), WINDOW, current, apply_changes(current, changes),
                    Inventory())
    assert p.impacted == p.keys  # the tier was put again: every key evaluated twice
    got = p.flows.to_pylist()
    assert {r["change"] for r in got} == {"unchanged"}
    assert all(r["before_trace"] == r["after_trace"] for r in got)
    assert sum(r["records"] for r in got) == len(rows)


@SETTINGS
@given(policy_sets(), st.data(), traffic())
def test_every_verdict_is_the_reference_evaluators(docs: list[dict[str, Any]], data: Any,
                                                   rows: list[dict[str, Any]]) -> None:
    current = PolicySet.from_documents(load_text(_text(docs)))
    victim = data.draw(st.integers(1, len(docs) - 1))
    if data.draw(st.booleans()):
        replacement = data.draw(policy_docs("p0"))
        replacement["metadata"] = docs[victim]["metadata"]
        replacement["kind"] = docs[victim]["kind"]
        if replacement["kind"] == "GlobalNetworkPolicy":
            replacement["metadata"].pop("namespace", None)
        replacement["spec"]["tier"] = docs[victim]["spec"]["tier"]
        changes = [Change.put(d) for d in load_text(_text([replacement]))]
    else:
        meta = docs[victim]["metadata"]
        changes = [Change.delete("/".join(p for p in (docs[victim]["kind"],
                                                      meta.get("namespace"), meta["name"])
                                          if p))]
    changed = apply_changes(current, changes)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "store", rows)
        p = preview(connect(store), WINDOW, current, changed, Inventory())
        # Pruned (namespaces not read, keys not evaluated) finds the same changes.
        only = preview(connect(store), WINDOW, current, changed, Inventory(),
                       only_changed=True)
    assert only.changed().to_pylist() == p.changed().to_pylist()
    expected = _reference(rows, current, changed.policies)
    got = {_key(r): (r["before"], r["after"]) for r in p.flows.to_pylist()
           if not r["synthesised"]}
    assert got == expected


def _key(r: dict[str, Any]) -> tuple[object, ...]:
    return (r["reporter"], r["source_name_aggr"], r["dest_name_aggr"], r["dest_port"],
            r["proto"])


def _reference(rows: list[dict[str, Any]], before: PolicySet,
               after: PolicySet) -> dict[tuple[object, ...], tuple[str, str]]:
    def batch(ps: PolicySet) -> BatchEvaluator:
        return BatchEvaluator(Evaluator(ps.with_policies(ps.enforced())))

    b, a = batch(before), batch(after)
    out = {}
    for row in rows:
        verdicts = (b.evaluate_row(row)[0].action or "uncertain",
                    a.evaluate_row(row)[0].action or "uncertain")
        out[_key(row)] = verdicts
    for key, (was, now) in list(out.items()):
        partner = ("dst", *key[1:])
        if key[0] == "src" and (was, now) == ("allow", "deny") and partner in out:
            out[partner] = (out[partner][0], "deny")
    return out
