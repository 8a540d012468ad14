"""The batch evaluator agrees with the per-row reference path on every row.

Random flow-log tables (hypothesis) mix workloads, network sets and external IPs, aggregated
rows without IPs, several ports, protocols and reporters; every row's enforced and pending
verdict and hit list must equal what the reference evaluation of that row alone gives.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import Evaluator, PolicySet, load_text
from policy.batch import KEY_COLUMNS, BatchEvaluator

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
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: public, labels: {type: public}}
spec: {nets: [8.0.0.0/8]}
---
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
    table = pa.Table.from_pylist(flow_rows, schema=SCHEMA)
    batch = _evaluator()
    result = batch.evaluate(table)
    enforced = result.enforced_policies().to_pylist()
    pending = result.pending_policies().to_pylist()
    reference = _evaluator()
    for i, row in enumerate(table.to_pylist()):
        e, p = reference.evaluate_row(row)
        assert result.action[i].as_py() == (e.action or "uncertain"), row
        assert result.pending_action[i].as_py() == (p.action or "uncertain"), row
        assert enforced[i] == e.rendered(), row
        assert pending[i] == p.rendered(), row


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
