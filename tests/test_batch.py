"""The batch evaluator agrees with the per-row reference path on every row.

Random flow-log tables (hypothesis) mix workloads, network sets and external IPs, aggregated
rows without IPs, several ports, protocols and reporters; every row's enforced and pending
verdict and hit list must equal what the reference evaluation of that row alone gives.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import Evaluator, PolicySet, load_text
from policy.batch import KEY_COLUMNS, BatchEvaluator
from policy.endpoints import Endpoint, NamedPortDef

PUBLIC_SET = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: public, labels: {type: public}}
spec: {nets: [8.0.0.0/8]}
"""

POLICIES = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block-public}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Egress]
  egress:
  - {action: Deny, destination: {selector: "type == 'public'"}}
  - {action: Pass}
---
""" + PUBLIC_SET + """---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default.web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Ingress, Egress]
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: "app == 'api'"}, destination: {ports: [80]}}
  egress:
  - {action: Allow, protocol: TCP, destination: {nets: [10.0.0.0/8]}}
  - {action: Allow, protocol: TCP, destination: {domains: ["*.example.com"]}}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default.api, namespace: shop}
spec:
  selector: app == 'api'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: ["8000:8100"]}}]
"""

SIDES = [
    {"type": "wep", "namespace": "shop", "name": "-", "name_aggr": "web-5d8f7c9b4-*",
     "labels": [("app", "web")], "ip": None},
    {"type": "wep", "namespace": "shop", "name": "api-7c9b4d5f8-x2x9z", "name_aggr":
     "api-7c9b4d5f8-*", "labels": [("app", "api")], "ip": "10.1.0.7"},
    {"type": "wep", "namespace": "shop", "name": "-", "name_aggr": "api-7c9b4d5f8-*",
     "labels": [("app", "api")], "ip": None},
    {"type": "ns", "namespace": "-", "name": "-", "name_aggr": "public", "labels": None,
     "ip": "8.8.8.8"},
    {"type": "net", "namespace": "-", "name": "-", "name_aggr": "pub", "labels": None,
     "ip": "93.184.216.34"},
    {"type": "net", "namespace": "-", "name": "-", "name_aggr": "pvt", "labels": None,
     "ip": None},
]


def _row(src: dict, dst: dict, reporter: str, proto: str, port: int | None,
         sport: int | None, domains: list[str] | None) -> dict:
    row: dict = {"reporter": reporter, "proto": proto, "dest_domains": domains,
                 "dest_service_namespace": "-", "dest_service_name": "-",
                 "source_port": sport, "dest_port": port}
    for side, v in (("source", src), ("dest", dst)):
        for k, x in v.items():
            row[f"{side}_{k}"] = x
    return row


rows = st.builds(
    _row, st.sampled_from(SIDES), st.sampled_from(SIDES), st.sampled_from(["src", "dst"]),
    st.sampled_from(["tcp", "udp", "icmp"]), st.sampled_from([80, 443, 8050, None]),
    st.sampled_from([None, 40000]), st.sampled_from([None, ["api.example.com"], ["x.org"]]),
)

SCHEMA = pa.schema([
    ("reporter", pa.string()), ("proto", pa.string()), ("dest_domains", pa.list_(pa.string())),
    ("dest_service_namespace", pa.string()), ("dest_service_name", pa.string()),
    *[(f"{s}_{c}", t) for s in ("source", "dest") for c, t in (
        ("type", pa.string()), ("namespace", pa.string()), ("name", pa.string()),
        ("name_aggr", pa.string()), ("labels", pa.map_(pa.string(), pa.string())),
        ("ip", pa.string()), ("port", pa.int32()))],
])


def _evaluator() -> BatchEvaluator:
    ps = PolicySet.from_documents(load_text(POLICIES))
    return BatchEvaluator(Evaluator(ps, {"shop": {"team": "a"}}), namespaces={"shop": {}})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, min_size=1, max_size=40))
def test_batch_matches_per_row_reference(flow_rows: list[dict]) -> None:
    assert_batch_equals_reference(flow_rows, _evaluator)


def assert_batch_equals_reference(flow_rows: list[dict], make: Callable[[], BatchEvaluator],
                                  table: pa.Table | None = None) -> None:
    """Every row's enforced and pending verdict, hit list and whole (uncertain) outcome
    from one batch evaluation (of ``table``, by default the rows in the flow-log schema)
    equal the reference evaluation of that row alone."""
    if table is None:
        table = pa.Table.from_pylist(flow_rows, schema=SCHEMA)
    result = make().evaluate(table)
    enforced = result.enforced_policies().to_pylist()
    pending = result.pending_policies().to_pylist()
    reference = make()
    for i, row in enumerate(pa.Table.from_pylist(flow_rows, schema=SCHEMA).to_pylist()):
        e, p = reference.evaluate_row(row)
        assert result.action[i].as_py() == (e.action or "uncertain"), row
        assert result.pending_action[i].as_py() == (p.action or "uncertain"), row
        assert enforced[i] == e.rendered(), row
        assert pending[i] == p.rendered(), row
        assert result.enforced_outcomes[result.trace_id[i]] == e.outcome, row


def test_batch_distinct_keys_and_chunks() -> None:
    """Repeated rows are evaluated once; multi-chunk dictionary columns are unified."""
    base = [_row(SIDES[2], SIDES[0], "dst", "tcp", 80, None, None),
            _row(SIDES[0], SIDES[4], "src", "tcp", 443, None, None)]
    t1 = pa.Table.from_pylist(base * 50, schema=SCHEMA)
    t2 = pa.Table.from_pylist(base[::-1] * 50, schema=SCHEMA)
    table = pa.concat_tables([t1, t2]).unify_dictionaries()
    dict_table = table.set_column(0, "reporter", table["reporter"].dictionary_encode())
    result = _evaluator().evaluate(dict_table)
    assert result.keys == 2
    assert result.action.to_pylist()[:2] == ["allow", "deny"]
    assert result.enforced_policies().to_pylist()[:2] == [
        ["0|default|shop/default.web|allow|0"],
        ["0|security|security.block-public|pass|1", "1|default|shop/default.web|deny|-1"],
    ]
    assert result.pending_policies().to_pylist()[0] == ["0|default|shop/default.web|allow|0"]


def test_batch_reports_missing_columns() -> None:
    table = pa.table({"reporter": ["src"]})
    try:
        _evaluator().evaluate(table)
    except ValueError as e:
        assert str(e).startswith("flow table lacks columns proto, dest_domains")
        assert all(c in str(e) for c in KEY_COLUMNS[1:])
    else:
        raise AssertionError("missing columns were accepted")


# Every rule feature the batch walk handles its own way (Log and Pass rules, a tier that
# passes by default, negations, named ports resolved per protocol, ICMP and IP version
# matched per flow, source ports, services, network-set domains, service accounts, staged
# policies and staged deletes) against the per-row reference: verdict, trace and the whole
# (uncertain) outcome per row.
RICH_POLICIES = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.guard}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Ingress, Egress]
  ingress:
  - {action: Log}
  - {action: Deny, protocol: ICMP, icmp: {type: 8}}
  - {action: Deny, ipVersion: 6}
  - {action: Pass, source: {notSelector: "app == 'web'"}, notProtocol: UDP}
  egress:
  - {action: Log, destination: {nets: [10.0.0.0/8]}}
  - {action: Deny, protocol: TCP, destination: {selector: "type == 'public'", notPorts: [443]}}
  - {action: Allow, destination: {selector: "type == 'partners'"}}
  - {action: Pass, protocol: UDP, source: {ports: ["40000:40010"]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform.api}
spec:
  tier: platform
  order: 10
  selector: app == 'api'
  types: [Ingress, Egress]
  ingress:
  - {action: Allow, protocol: TCP, destination: {ports: [http]}}
  - {action: Allow, protocol: UDP, destination: {ports: [dns]}}
  - {action: Deny, source: {serviceAccounts: {names: [robot]}}}
  egress:
  - {action: Allow, destination: {services: {name: db, namespace: shop}}}
  - {action: Allow, protocol: TCP, destination: {domains: ["*.example.com"]}}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: platform.lockdown}
spec:
  tier: platform
  order: 5
  selector: all()
  types: [Ingress]
  ingress: [{action: Deny, protocol: TCP, destination: {notPorts: [80]}}]
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: platform.api, namespace: shop}
spec:
  stagedAction: Delete
  tier: platform
  selector: app == 'api'
---
""" + PUBLIC_SET + """---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {type: partners}}
spec: {allowedEgressDomains: ["*.partner.org"]}
"""

RICH_SIDES = [*SIDES, {"type": "wep", "namespace": "shop", "name": "robot-1", "name_aggr":
                       "robot-*", "labels": [("app", "batch")], "ip": "10.1.0.9"},
              {"type": "wep", "namespace": "shop", "name": "-", "name_aggr": "api6-*",
               "labels": [("app", "api")], "ip": "fd00::7"}]

rich_rows = st.builds(
    _row, st.sampled_from(RICH_SIDES), st.sampled_from(RICH_SIDES),
    st.sampled_from(["src", "dst"]), st.sampled_from(["tcp", "udp", "icmp", "47"]),
    st.sampled_from([80, 443, 53, 8080, None]), st.sampled_from([None, 40005, 50000]),
    st.sampled_from([None, ["api.example.com"], ["x.partner.org"], []]),
).map(lambda row: {**row, **({"dest_service_namespace": "shop", "dest_service_name": "db"}
                             if row["dest_port"] == 8080 else {})})


def _rich_lookup(namespace: str, name: str) -> Endpoint | None:
    if namespace != "shop":
        return None
    ports = (NamedPortDef("http", 6, 8080), NamedPortDef("dns", 17, 53))
    sa = "robot" if name.startswith("robot") else "default"
    return Endpoint(namespace, name, service_account=sa, named_ports=ports)


def _rich_evaluator() -> BatchEvaluator:
    ps = PolicySet.from_documents(load_text(RICH_POLICIES))
    return BatchEvaluator(Evaluator(ps, {"shop": {"team": "a"}}), _rich_lookup,
                          namespaces={"shop": {}})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rich_rows, min_size=1, max_size=60))
def test_batch_walk_matches_per_row_reference_on_every_rule_feature(
        flow_rows: list[dict]) -> None:
    assert_batch_equals_reference(flow_rows, _rich_evaluator)


def test_the_rich_sample_reaches_every_outcome() -> None:
    """The rich policy set is not vacuous: its rows are allowed, denied, passed on and
    uncertain, by the walk and by the per-flow fallback."""
    rows = [_row(s, d, r, proto, port, sport, None) for s in RICH_SIDES for d in RICH_SIDES
            for r in ("src", "dst") for proto in ("tcp", "udp", "icmp")
            for port in (80, 8080, 53, None) for sport in (None, 40005)]
    result = _rich_evaluator().evaluate(pa.Table.from_pylist(rows, schema=SCHEMA))
    assert set(result.action.to_pylist()) == {"allow", "deny", "uncertain"}
    assert set(result.pending_action.to_pylist()) == {"allow", "deny", "uncertain"}
    hits = {h for trace in result.enforced + result.pending for h in trace}
    for part in ("|security|security.guard|pass|3", "|security|security.guard|deny|2",
                 "|platform|platform.api|allow|0", "|platform|platform.api|allow|1",
                 "|platform|platform.api|deny|2", "|platform|platform.staged:lockdown|deny|0",
                 "|security|security.guard|pass|-1", "|platform|platform.api|deny|-1",
                 "|__PROFILE__|__PROFILE__.kns.shop|allow|0"):
        assert any(h.endswith(part) for h in hits), (part, sorted(hits))


def test_an_empty_table_and_unpoliced_rows() -> None:
    empty = _rich_evaluator().evaluate(pa.Table.from_pylist([], schema=SCHEMA))
    assert (empty.keys, len(empty.action), empty.enforced_policies().to_pylist()) == (0, 0, [])
    # Neither end a workload: nothing polices the flow, no trace.
    row = _row(SIDES[4], SIDES[3], "src", "tcp", 80, None, None)
    result = _rich_evaluator().evaluate(pa.Table.from_pylist([row], schema=SCHEMA))
    assert result.action.to_pylist() == ["allow"] and result.enforced_policies().to_pylist() == [[]]
