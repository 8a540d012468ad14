"""The claim that matters, for random clusters and traffic: with the recommendation enforced,
every observed flow it was built from stays allowed (the replay proof passes), for both
scopes, and the output is the same whatever order the records were written in.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_recommend_scenarios import PUB, PVT, flow, side, wep, write_store

from analytics.db import connect, query
from analytics.window import Window
from ingest.inventory import Inventory
from policy import PolicySet, load_text
from recommend.engine import Request, recommend

SETS = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners}
spec: {nets: [192.0.2.0/24, 198.51.100.0/24]}
"""

NAMESPACES = ("a", "b")
WORKLOADS = [(ns, f"w{i}") for ns in NAMESPACES for i in range(3)]


def _wep(ns: str, app: str) -> dict[str, Any]:
    # w0 and w1 share `app` in namespace a, so w1 needs its `track` label to be told apart.
    labels = {"app": "w0" if app == "w1" and ns == "a" else app,
              "pod-template-hash": f"{app}hash", "track": app}
    return wep(ns, f"{app}-{app}hash-*", labels)


PEERS = st.one_of(
    st.sampled_from([_wep(ns, app) for ns, app in WORKLOADS]),
    st.sampled_from([PUB, PVT, side("ns", "-", "partners"),
                     side("net", "-", "pub", ip="203.0.113.9")]),
)
TRAFFIC = st.tuples(
    st.sampled_from(WORKLOADS), PEERS, st.sampled_from(["egress", "ingress"]),
    st.sampled_from(["tcp", "udp", "icmp", "sctp"]), st.sampled_from([53, 80, 443, 8080,
                                                                      8081, 8082, 9000]),
    st.sampled_from([None, ["api.example.com"], ["a.cdn.example.net", "b.cdn.example.net"]]),
    st.integers(1, 5),
)


def _rows(traffic: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    rows = []
    for (ns, app), peer, direction, proto, port, domains, flows in traffic:
        local = _wep(ns, app)
        if direction == "egress":
            rows.append(flow(local, peer, None if proto == "icmp" else port, proto,
                             domains=domains if peer["name_aggr"] == "pub" else None,
                             flows=flows))
        else:
            rows.append(flow(peer, local, None if proto == "icmp" else port, proto,
                             reporter="dst", flows=flows))
    return rows


# Cases random traffic of this size rarely builds: several ports to one peer (a range and a
# port apart), names on aggregated records, set and private peers without IPs, and the two
# workloads of namespace a that share `app`.
_MANY = [(("a", "w0"), _wep("a", "w1"), "egress", "tcp", p, None, 1) for p in (8080, 8081,
                                                                             8082, 9000)]
_MIXED = [
    (("a", "w1"), PUB, "egress", "tcp", 443, ["a.cdn.example.net", "b.cdn.example.net"], 2),
    (("a", "w1"), PVT, "ingress", "tcp", 80, None, 1),
    (("b", "w2"), side("ns", "-", "partners"), "egress", "udp", 53, None, 3),
    (("b", "w2"), _wep("a", "w0"), "ingress", "icmp", 80, None, 1),
    (("a", "w0"), PUB, "egress", "sctp", 9000, None, 1),
]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@example(_MANY, "workload")
@example(_MANY + _MIXED, "workload")
@example(_MANY + _MIXED, "namespace")
@given(st.lists(TRAFFIC, min_size=1, max_size=20), st.sampled_from(["workload", "namespace"]))
def test_every_observed_flow_stays_allowed(traffic: list[tuple[Any, ...]], scope: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = _rows(traffic)
        outputs = []
        for name, ordered in (("one", rows), ("two", rows[::-1])):
            store = write_store(Path(tmp) / name, ordered)
            rec = recommend(partial(query, connect(store)),
                            PolicySet.from_documents(load_text(SETS)), Inventory(),
                            Request(None, window=Window(), scope=scope))
            assert rec.proof.passed, [str(f) for f in rec.proof.failures]
            assert rec.proof.allowed_connections == rec.proof.connections == sum(
                r["num_flows"] for r in rows)
            outputs.append([(o.filename, o.text) for o in rec.outputs])
        assert outputs[0] == outputs[1]
