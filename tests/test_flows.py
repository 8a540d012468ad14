"""FlowBuilder: connection segments → Calico flow-log records (``reference/calico.md`` §1.2–§1.6).

Segments are written by hand (one connection's activity in one flush interval, initiator as
``src``) and the records checked field by field: which reporters report a connection, byte and
packet orientation, the four aggregation levels for allowed and for denied records, label
intersection and counter sums when pods merge, services, destination domains, and the
enforced traces under the storefront lab's policies. A property test checks the counter
bookkeeping on random segments.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.flows import Aggregation, FlowBuilder, proto_name
from ingest.identity import Resolver
from ingest.inventory import Inventory
from ingest.schema import DNS, FLOWS, SEGMENTS
from policy import Evaluator
from policy.batch import BatchEvaluator
from policy.model import NetworkSet
from tierflow.inputs import load_inventory, load_policies

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
INTERVAL = dt.timedelta(seconds=300)
STOREFRONT = Path(__file__).resolve().parent.parent / "sample_flows" / "storefront"

# -- a small cluster, written inline ---------------------------------------------------------

WEB1, WEB2, DB, CLIENT = "10.1.0.1", "10.1.0.2", "10.1.0.9", "10.2.0.1"
DB_SVC, CACHE_SVC, WEB_SVC = "10.96.0.9", "10.96.0.10", "10.96.0.11"
PUB, PVT, SET_IP = "8.8.8.8", "192.168.0.1", "203.0.113.5"


def _pod(name: str, ns: str, address: str, labels: dict[str, str],
         generate_name: str | None = None, owner: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels,
                            "creationTimestamp": "2026-11-27T08:00:00Z"}
    if generate_name:
        meta["generateName"] = generate_name
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    return {"kind": "Pod", "metadata": meta, "spec": {"containers": []},
            "status": {"podIP": address}}


def _service(name: str, address: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": address, "ports": ports}}


INVENTORY = Inventory.from_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"kind": "Namespace", "metadata": {"name": "shop"}},
    {"kind": "Namespace", "metadata": {"name": "other"}},
    # Two pods of one ReplicaSet; their "version" labels differ.
    _pod("web-5d8f7c9b4-bcdfg", "shop", WEB1, {"app": "web", "tier": "front", "version": "v1"},
         "web-5d8f7c9b4-", "ReplicaSet"),
    _pod("web-5d8f7c9b4-hjklm", "shop", WEB2, {"app": "web", "tier": "front", "version": "v2"},
         "web-5d8f7c9b4-", "ReplicaSet"),
    _pod("db-0", "shop", DB, {"app": "db"}, None, "StatefulSet"),
    _pod("client", "other", CLIENT, {}),
    _service("db", DB_SVC, [{"name": "pg", "port": 5432, "targetPort": 5432}]),
    _service("cache", CACHE_SVC, [{"port": 6379, "targetPort": 6379}]),
    _service("web", WEB_SVC, [{"name": "http", "port": 80, "targetPort": 8080}]),
]}))
WEB1_NAME, WEB2_NAME = "web-5d8f7c9b4-bcdfg", "web-5d8f7c9b4-hjklm"
WEP_IPS = frozenset({WEB1, WEB2, DB, CLIENT})


def _netset(name: str, namespace: str | None, net: str) -> NetworkSet:
    return NetworkSet(name, namespace, (("set", name),), (ipaddress.ip_network(net),))


NETWORK_SETS = (_netset("everyone", None, "203.0.113.0/24"),
                _netset("shop-partners", "shop", "203.0.0.0/16"),
                _netset("other-partners", "other", "203.0.113.0/25"))


def seg(conn: int, src: str, dst: str, sport: int | None, dport: int | None, *,
        proto: int = 6, interval: int = 0, start: float = 0.0,
        fwd: tuple[int, int] = (5, 500), rev: tuple[int, int] = (4, 4000),
        started: bool = True, completed: bool = True,
        orig: tuple[str, int] | None = None) -> dict[str, Any]:
    """One SEGMENTS row; ``fwd``/``rev`` are (packets, bytes) initiator→responder and back."""
    begin = T0 + interval * INTERVAL
    return {"start_time": begin, "end_time": begin + INTERVAL, "conn_id": conn,
            "conn_start": T0 + dt.timedelta(seconds=start), "proto": proto,
            "src_ip": src, "dst_ip": dst, "src_port": sport, "dst_port": dport,
            "orig_dst_ip": orig[0] if orig else None, "orig_dst_port": orig[1] if orig else None,
            "icmp_type": None, "icmp_code": None,
            "packets_fwd": fwd[0], "bytes_fwd": fwd[1], "packets_rev": rev[0],
            "bytes_rev": rev[1], "started": started, "completed": completed}


def answer(client: str, name: str, address: str, at: float = -10.0,
           ttl: int = 60) -> dict[str, Any]:
    return {"time": T0 + dt.timedelta(seconds=at), "client_ip": client, "name": name,
            "ip": address, "ttl": ttl}


LEVEL_0 = Aggregation(0, 0)
DEFAULT = Aggregation()


def build(rows: Sequence[dict[str, Any]], aggregation: Aggregation = LEVEL_0,
          dns: Sequence[dict[str, Any]] = (), **kw: Any) -> pa.Table:
    """The records of ``rows`` in the inline cluster, without policies."""
    builder = FlowBuilder(Resolver(INVENTORY, NETWORK_SETS), None, aggregation, **kw)
    return builder.build(pa.Table.from_pylist(list(rows), schema=SEGMENTS),
                         pa.Table.from_pylist(list(dns), schema=DNS) if dns else None)


def view(table: pa.Table, *fields: str) -> list[tuple[Any, ...]]:
    """The chosen fields of every record, in a deterministic order."""
    return sorted((tuple(r[f] for f in fields) for r in table.select(list(fields)).to_pylist()),
                  key=repr)


def only(table: pa.Table, reporter: str) -> dict[str, Any]:
    """The single record of ``reporter``."""
    found = [r for r in table.to_pylist() if r["reporter"] == reporter]
    assert len(found) == 1, found
    return found[0]


# -- the storefront lab with its policies ----------------------------------------------------

FRONT, FRONT2, MS1, MS2 = "10.244.1.10", "10.244.2.10", "10.244.1.11", "10.244.2.12"
BACKEND, COREDNS, CENTOS, NGINX = "10.244.1.13", "10.244.0.2", "10.244.1.20", "10.244.2.21"
KUBE_DNS_SVC = "10.96.0.10"
SEC = "0|security|security.pass|pass|0"
PLAT = "1|platform|platform.pass|pass|0"


@functools.cache
def storefront() -> tuple[Inventory, Resolver, BatchEvaluator]:
    inv = load_inventory([STOREFRONT / "inventory.json"])
    policies = load_policies([STOREFRONT / "policies"])
    evaluator = Evaluator(policies, inv.namespaces)
    batch = BatchEvaluator(evaluator, lambda ns, n: inv.endpoint(f"{ns}/{n}"), inv.namespaces)
    return inv, Resolver(inv, policies.network_sets), batch


def build_storefront(rows: Sequence[dict[str, Any]], aggregation: Aggregation = DEFAULT,
                     dns: Sequence[dict[str, Any]] = ()) -> pa.Table:
    _, resolver, batch = storefront()
    return FlowBuilder(resolver, batch, aggregation).build(
        pa.Table.from_pylist(list(rows), schema=SEGMENTS),
        pa.Table.from_pylist(list(dns), schema=DNS) if dns else None)


# -- reporters -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        # pod → pod: src (egress, at the client) and dst (ingress, at the server).
        (WEB1, DB, [("dst", "wep", "wep"), ("src", "wep", "wep")]),
        (CLIENT, WEB1, [("dst", "wep", "wep"), ("src", "wep", "wep")]),
        # pod → outside: src only; outside → pod: dst only.
        (WEB1, PUB, [("src", "wep", "net")]),
        (WEB1, SET_IP, [("src", "wep", "ns")]),
        (WEB1, DB_SVC, [("src", "wep", "net")]),  # a ClusterIP is no workload
        (PUB, WEB1, [("dst", "net", "wep")]),
        (SET_IP, DB, [("dst", "ns", "wep")]),
        # Between two non-workloads: once, by the initiator.
        (PVT, PUB, [("src", "net", "net")]),
        (PVT, SET_IP, [("src", "net", "ns")]),
        (SET_IP, PVT, [("src", "ns", "net")]),
    ],
)
def test_reporters(src: str, dst: str, expected: list[tuple[str, str, str]]) -> None:
    out = build([seg(1, src, dst, 40000, 443)])
    assert view(out, "reporter", "source_type", "dest_type") == expected
    assert view(out, "source_ip", "dest_ip") == [(src, dst)] * len(expected)


@pytest.mark.parametrize(
    ("src", "dst", "dport", "expected"),
    [
        # frontend's egress (default.dmz) denies backend: the packet never leaves, src only.
        (FRONT, BACKEND, 8080, [("src", "deny")]),
        # backend's egress allows, frontend's ingress (default.dmz) denies.
        (BACKEND, FRONT, 8080, [("dst", "deny"), ("src", "allow")]),
        (FRONT, MS1, 8080, [("dst", "allow"), ("src", "allow")]),
        # pod → outside denied by egress (no DNS answer for Twilio): src only.
        (MS2, "52.1.2.4", 443, [("src", "deny")]),
        # outside → pod denied by ingress: dst only.
        ("9.9.9.9", FRONT, 8080, [("dst", "deny")]),
        ("18.0.5.5", FRONT, 8080, [("dst", "allow")]),
        # Between non-workloads no policy applies.
        ("192.168.5.5", "8.8.8.8", 53, [("src", "allow")]),
    ],
)
def test_reporters_with_policies(src: str, dst: str, dport: int,
                                 expected: list[tuple[str, str]]) -> None:
    out = build_storefront([seg(1, src, dst, 40000, dport)])
    assert view(out, "reporter", "action") == expected


# -- counters --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        # (reporter, bytes_in, bytes_out, packets_in, packets_out); in = received by the
        # reporting endpoint.
        (WEB1, DB, [("dst", 500, 4000, 5, 4), ("src", 4000, 500, 4, 5)]),
        (WEB1, PUB, [("src", 4000, 500, 4, 5)]),
        (PUB, WEB1, [("dst", 500, 4000, 5, 4)]),
        (PVT, PUB, [("src", 4000, 500, 4, 5)]),
    ],
)
def test_bytes_and_packets_are_relative_to_the_reporter(
        src: str, dst: str, expected: list[tuple[str, int, int, int, int]]) -> None:
    out = build([seg(1, src, dst, 40000, 443, fwd=(5, 500), rev=(4, 4000))])
    assert view(out, "reporter", "bytes_in", "bytes_out", "packets_in", "packets_out") \
        == expected


# -- aggregation levels ----------------------------------------------------------------------

LEVEL_FIELDS = ("source_ip", "source_name", "source_name_aggr", "source_port", "dest_ip",
                "dest_name", "dest_name_aggr", "dest_port", "dest_service_namespace",
                "dest_service_name", "dest_service_port")


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, (WEB1, WEB1_NAME, "web-5d8f7c9b4-*", 40000, DB, "db-0", "db-*", 5432,
             "shop", "db", "pg")),
        (1, (WEB1, WEB1_NAME, "web-5d8f7c9b4-*", None, DB, "db-0", "db-*", 5432,
             "shop", "db", "pg")),
        (2, (None, "-", "web-5d8f7c9b4-*", None, None, "-", "db-*", 5432,
             "shop", "db", "pg")),
        (3, (None, "-", "web-5d8f7c9b4-*", None, None, "-", "db-*", None,
             "shop", "db", "-")),
    ],
)
def test_aggregation_level_of_allowed_records(level: int, expected: tuple[Any, ...]) -> None:
    # web → db through the db Service (DNATed to the pod); denied records keep level 0.
    out = build([seg(1, WEB1, DB, 40000, 5432, orig=(DB_SVC, 5432))], Aggregation(level, 0))
    assert view(out, "reporter", *LEVEL_FIELDS) == [("dst", *expected), ("src", *expected)]
    assert view(out, "action", "source_type", "dest_type", "num_flows") == [
        ("allow", "wep", "wep", 1)] * 2


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, (FRONT, "frontend-864f4fcdfd-2hhv4", "frontend-864f4fcdfd-*", 40000, BACKEND,
             "backend-5f8d7c6b9f-k2j4h", "backend-5f8d7c6b9f-*", 8080,
             "storefront", "backend", "http")),
        (1, (FRONT, "frontend-864f4fcdfd-2hhv4", "frontend-864f4fcdfd-*", None, BACKEND,
             "backend-5f8d7c6b9f-k2j4h", "backend-5f8d7c6b9f-*", 8080,
             "storefront", "backend", "http")),
        (2, (None, "-", "frontend-864f4fcdfd-*", None, None, "-", "backend-5f8d7c6b9f-*", 8080,
             "storefront", "backend", "http")),
        (3, (None, "-", "frontend-864f4fcdfd-*", None, None, "-", "backend-5f8d7c6b9f-*", None,
             "storefront", "backend", "-")),
    ],
)
def test_aggregation_level_of_denied_records(level: int, expected: tuple[Any, ...]) -> None:
    # frontend → backend Service :80, DNATed to backend:8080; frontend's egress denies it.
    # Allowed records would be at level 0: the denied level alone decides.
    out = build_storefront([seg(1, FRONT, BACKEND, 40000, 8080, orig=("10.96.112.23", 80))],
                           Aggregation(allowed=0, denied=level))
    assert view(out, "reporter", "action", *LEVEL_FIELDS) == [("src", "deny", *expected)]


def test_default_levels_are_two_for_allowed_and_one_for_denied() -> None:
    assert Aggregation() == Aggregation(allowed=2, denied=1, domains_limit=5)
    # backend → frontend: allowed at backend (src), denied at frontend (dst).
    out = build_storefront([seg(1, BACKEND, FRONT, 40000, 8080)])
    assert view(out, "reporter", "action", "source_ip", "source_name", "source_port",
                "dest_ip", "dest_name", "dest_port") == [
        ("dst", "deny", BACKEND, "backend-5f8d7c6b9f-k2j4h", None, FRONT,
         "frontend-864f4fcdfd-2hhv4", 8080),
        ("src", "allow", None, "-", None, None, "-", 8080),
    ]


def test_levels_apply_per_action_in_one_build() -> None:
    out = build_storefront([seg(1, BACKEND, FRONT, 40000, 8080)], Aggregation(3, 0))
    assert view(out, "reporter", "action", "source_ip", "source_port", "dest_port") == [
        ("dst", "deny", BACKEND, 40000, 8080),
        ("src", "allow", None, None, None),
    ]


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_aggregation_level_must_be_0_to_3(level: int) -> None:
    assert Aggregation(level, level).allowed == level
    with pytest.raises(ValueError, match=r"^aggregation level for denied flows must be "
                                         r"0, 1, 2 or 3 \(got 4\)$"):
        Aggregation(level, 4)
    with pytest.raises(ValueError, match=r"^aggregation level for allowed flows must be "
                                         r"0, 1, 2 or 3 \(got -1\)$"):
        Aggregation(-1, level)


# Three connections of one ReplicaSet's two pods to db, directly (no Service).
REPLICAS = [
    seg(1, WEB1, DB, 40001, 5432, fwd=(1, 10), rev=(2, 20), started=True, completed=True),
    seg(2, WEB2, DB, 40002, 5432, fwd=(3, 30), rev=(4, 40), started=True, completed=False),
    seg(3, WEB2, DB, 40003, 5432, fwd=(5, 50), rev=(6, 60), started=False, completed=True),
]
MERGED_FIELDS = ("reporter", "source_name", "source_labels", "dest_labels", "bytes_in",
                 "bytes_out", "packets_in", "packets_out", "num_flows", "num_flows_started",
                 "num_flows_completed")


def test_level_2_merges_pods_of_one_replicaset() -> None:
    out = build(REPLICAS, Aggregation(2, 2))
    common = [("app", "web"), ("tier", "front")]  # "version" differs: gone
    assert view(out, *MERGED_FIELDS) == [
        ("dst", "-", common, [("app", "db")], 90, 120, 9, 12, 3, 2, 2),
        ("src", "-", common, [("app", "db")], 120, 90, 12, 9, 3, 2, 2),
    ]
    assert view(out, "source_name_aggr", "dest_name_aggr", "dest_port") == [
        ("web-5d8f7c9b4-*", "db-*", 5432)] * 2


def test_level_2_intersects_destination_labels_too() -> None:
    rows = [seg(1, DB, WEB1, 1, 8080), seg(2, DB, WEB2, 2, 8080)]
    out = build(rows, Aggregation(2, 2))
    assert view(out, "reporter", "source_labels", "dest_name_aggr", "dest_labels",
                "num_flows") == [
        ("dst", [("app", "db")], "web-5d8f7c9b4-*", [("app", "web"), ("tier", "front")], 2),
        ("src", [("app", "db")], "web-5d8f7c9b4-*", [("app", "web"), ("tier", "front")], 2),
    ]


def test_level_1_merges_source_ports_only() -> None:
    out = build(REPLICAS, Aggregation(1, 1))
    v1 = [("app", "web"), ("tier", "front"), ("version", "v1")]
    v2 = [("app", "web"), ("tier", "front"), ("version", "v2")]
    assert view(out, *MERGED_FIELDS) == [
        ("dst", WEB1_NAME, v1, [("app", "db")], 10, 20, 1, 2, 1, 1, 1),
        ("dst", WEB2_NAME, v2, [("app", "db")], 80, 100, 8, 10, 2, 1, 1),
        ("src", WEB1_NAME, v1, [("app", "db")], 20, 10, 2, 1, 1, 1, 1),
        ("src", WEB2_NAME, v2, [("app", "db")], 100, 80, 10, 8, 2, 1, 1),
    ]


def test_level_0_keeps_every_connection() -> None:
    out = build(REPLICAS, Aggregation(0, 0))
    assert view(out, "reporter", "source_port", "num_flows", "num_flows_started",
                "num_flows_completed") == [
        ("dst", 40001, 1, 1, 1), ("dst", 40002, 1, 1, 0), ("dst", 40003, 1, 0, 1),
        ("src", 40001, 1, 1, 1), ("src", 40002, 1, 1, 0), ("src", 40003, 1, 0, 1),
    ]


def test_level_2_merges_network_and_set_destinations_by_name_aggr() -> None:
    rows = [seg(1, WEB1, "8.8.8.8", 1, 53, proto=17), seg(2, WEB2, "1.1.1.1", 2, 53, proto=17),
            seg(3, WEB1, "10.9.9.9", 3, 53, proto=17), seg(4, WEB2, "172.16.0.1", 4, 53, proto=17),
            seg(5, WEB1, "203.0.113.5", 5, 53, proto=17), seg(6, WEB2, "203.0.1.1", 6, 53,
                                                               proto=17)]
    out = build(rows, Aggregation(2, 2))
    assert view(out, "reporter", "dest_type", "dest_name_aggr", "dest_namespace",
                "dest_labels", "proto", "num_flows") == [
        ("src", "net", "pub", "-", None, "udp", 2),
        ("src", "net", "pvt", "-", None, "udp", 2),
        ("src", "ns", "shop-partners", "shop", [("set", "shop-partners")], "udp", 2),
    ]


def test_a_connection_spanning_two_intervals_gives_two_records() -> None:
    rows = [seg(7, WEB1, PUB, 40000, 443, interval=0, fwd=(1, 100), rev=(2, 200),
                started=True, completed=False),
            seg(7, WEB1, PUB, 40000, 443, interval=1, fwd=(3, 300), rev=(4, 400),
                started=False, completed=True)]
    out = build(rows, Aggregation())
    assert view(out, "start_time", "end_time", "reporter", "bytes_out", "bytes_in",
                "num_flows", "num_flows_started", "num_flows_completed") == [
        (T0, T0 + INTERVAL, "src", 100, 200, 1, 1, 0),
        (T0 + INTERVAL, T0 + 2 * INTERVAL, "src", 300, 400, 1, 0, 1),
    ]


def test_action_and_reporter_are_never_merged() -> None:
    # microservice1 → backend: egress (default.trusted rule 1) allows both ports; backend's
    # ingress (default.restricted) allows its named port http (8080) only. At level 3 the
    # ports vanish, yet allowed and denied, src and dst stay apart.
    out = build_storefront([seg(1, MS1, BACKEND, 40001, 8080), seg(2, MS1, BACKEND, 40002, 9090)],
                           Aggregation(3, 3))
    assert view(out, "reporter", "action", "dest_port", "num_flows", "enforced_policies") == [
        ("dst", "allow", None, 1, [SEC, PLAT, "2|default|storefront/default.restricted|allow|0"]),
        ("dst", "deny", None, 1, [SEC, PLAT, "2|default|storefront/default.restricted|deny|2"]),
        ("src", "allow", None, 2, [SEC, PLAT, "2|default|storefront/default.trusted|allow|1"]),
    ]


def test_one_record_per_distinct_enforced_trace() -> None:
    # backend → coredns on UDP 53 (platform.allow-kube-dns) and 5353 (default.restricted):
    # one key at level 3, two enforced traces at the source; one trace at the destination.
    out = build_storefront([seg(1, BACKEND, COREDNS, 40001, 53, proto=17),
                            seg(2, BACKEND, COREDNS, 40002, 5353, proto=17)], Aggregation(3, 3))
    assert view(out, "reporter", "action", "num_flows", "enforced_policies") == [
        ("dst", "allow", 2, [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.kube-system|allow|0"]),
        ("src", "allow", 1, [SEC, "1|platform|platform.allow-kube-dns|allow|0"]),
        ("src", "allow", 1, [SEC, PLAT, "2|default|storefront/default.restricted|allow|0"]),
    ]


# -- services --------------------------------------------------------------------------------

SERVICE_FIELDS = ("reporter", "dest_type", "dest_name_aggr", "dest_port",
                  "dest_service_namespace", "dest_service_name", "dest_service_port",
                  "dest_service_port_num")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # DNAT seen: the pre-DNAT destination names the service; both reporters carry it.
        (seg(1, WEB1, DB, 40000, 5432, orig=(DB_SVC, 5432)),
         [("dst", "wep", "db-*", 5432, "shop", "db", "pg", 5432),
          ("src", "wep", "db-*", 5432, "shop", "db", "pg", 5432)]),
        # DNAT to another port: the service port, not the target port, is looked up.
        (seg(1, CLIENT, WEB1, 40000, 8080, orig=(WEB_SVC, 80)),
         [("dst", "wep", "web-5d8f7c9b4-*", 8080, "shop", "web", "http", 80),
          ("src", "wep", "web-5d8f7c9b4-*", 8080, "shop", "web", "http", 80)]),
        # The ClusterIP itself as destination (no DNAT seen).
        (seg(1, WEB1, DB_SVC, 40000, 5432),
         [("src", "net", "pvt", 5432, "shop", "db", "pg", 5432)]),
        # An unnamed service port: "-".
        (seg(1, WEB1, CACHE_SVC, 40000, 6379),
         [("src", "net", "pvt", 6379, "shop", "cache", "-", 6379)]),
        # Not a service: pod IP, wrong protocol, wrong port.
        (seg(1, WEB1, DB, 40000, 5432),
         [("dst", "wep", "db-*", 5432, "-", "-", "-", None),
          ("src", "wep", "db-*", 5432, "-", "-", "-", None)]),
        (seg(1, WEB1, DB_SVC, 40000, 5432, proto=17),
         [("src", "net", "pvt", 5432, "-", "-", "-", None)]),
        (seg(1, WEB1, DB_SVC, 40000, 5433),
         [("src", "net", "pvt", 5433, "-", "-", "-", None)]),
    ],
)
def test_dest_service(row: dict[str, Any], expected: list[tuple[Any, ...]]) -> None:
    assert view(build([row]), *SERVICE_FIELDS) == expected


# -- destination domains ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("src", "dst", "answers", "expected"),
    [
        # An answer to this client for this IP, before the connection and within its TTL.
        (WEB1, PUB, [answer(WEB1, "dns.google", PUB, at=-10, ttl=60)], ["dns.google"]),
        (WEB1, PUB, [answer(WEB1, "dns.google", PUB, at=-3600, ttl=7200)], ["dns.google"]),
        # Another client's answer, another IP's, a later answer, an expired one: nothing.
        (WEB1, PUB, [answer(WEB2, "dns.google", PUB)], None),
        (WEB1, PUB, [answer(WEB1, "dns.google", "8.8.4.4")], None),
        (WEB1, PUB, [answer(WEB1, "dns.google", PUB, at=5)], None),
        (WEB1, PUB, [answer(WEB1, "dns.google", PUB, at=-100, ttl=60)], None),
        # Only the valid answers among several; each name once.
        (WEB1, PUB, [answer(WEB1, "b.example", PUB), answer(WEB1, "a.example", PUB),
                     answer(WEB1, "a.example", PUB, at=-20), answer(WEB1, "late.example",
                                                                      PUB, at=30),
                     answer(WEB2, "theirs.example", PUB)], ["a.example", "b.example"]),
        # At most five, sorted.
        (WEB1, PUB, [answer(WEB1, f"n{i}.example", PUB) for i in (7, 3, 5, 1, 6, 2, 4)],
         ["n1.example", "n2.example", "n3.example", "n4.example", "n5.example"]),
        # Network-set and ClusterIP destinations are not workloads: filled.
        (WEB1, SET_IP, [answer(WEB1, "partner.example", SET_IP)], ["partner.example"]),
        (PVT, PUB, [answer(PVT, "dns.google", PUB)], ["dns.google"]),
    ],
)
def test_dest_domains(src: str, dst: str, answers: list[dict[str, Any]],
                      expected: list[str] | None) -> None:
    out = build([seg(1, src, dst, 40000, 443)], dns=answers)
    assert view(out, "reporter", "dest_domains") == [("src", expected)]


@pytest.mark.parametrize(
    ("src", "dst", "answers"),
    [
        # A workload destination never gets domains, on either record.
        (WEB1, DB, [answer(WEB1, "db.example", DB)]),
        # Nor does a dst-reported record.
        (PUB, WEB1, [answer(PUB, "web.example", WEB1)]),
    ],
)
def test_no_dest_domains_for_workload_destinations(src: str, dst: str,
                                                    answers: list[dict[str, Any]]) -> None:
    out = build([seg(1, src, dst, 40000, 443)], dns=answers)
    assert {r["dest_domains"] for r in out.select(["dest_domains"]).to_pylist()} == {None}


def test_dest_domains_limit_is_configurable() -> None:
    answers = [answer(WEB1, f"n{i}.example", PUB) for i in (3, 1, 2)]
    out = build([seg(1, WEB1, PUB, 1, 443)], Aggregation(0, 0, domains_limit=2), dns=answers)
    assert view(out, "dest_domains") == [(["n1.example", "n2.example"],)]


def test_dest_domains_of_merged_records_are_united() -> None:
    rows = [seg(1, WEB1, PUB, 1, 443), seg(2, WEB2, "1.1.1.1", 2, 443)]
    answers = [answer(WEB1, "z.example", PUB), answer(WEB2, "a.example", "1.1.1.1"),
               answer(WEB1, "m.example", PUB)]
    out = build(rows, Aggregation(2, 2), dns=answers)
    assert view(out, "reporter", "dest_name_aggr", "num_flows", "dest_domains") == [
        ("src", "pub", 2, ["a.example", "m.example", "z.example"])]


# -- network sets: the local workload's namespace first --------------------------------------

def test_network_set_preference_follows_the_local_workload() -> None:
    rows = [seg(1, WEB1, SET_IP, 1, 443), seg(2, CLIENT, SET_IP, 2, 443),
            seg(3, PVT, SET_IP, 3, 443), seg(4, SET_IP, DB, 4, 5432)]
    out = build(rows)
    assert view(out, "reporter", "source_name_aggr", "source_namespace", "dest_name_aggr",
                "dest_namespace") == [
        ("dst", "shop-partners", "shop", "db-*", "shop"),
        ("src", "client", "other", "other-partners", "other"),
        ("src", "pvt", "-", "everyone", "-"),
        ("src", "web-5d8f7c9b4-*", "shop", "shop-partners", "shop"),
    ]


# -- protocols -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("number", "name"),
    [(1, "icmp"), (4, "ipip"), (6, "tcp"), (17, "udp"), (50, "esp"), (58, "icmp6"),
     (132, "sctp"), (47, "47"), (0, "0"), (255, "255")],
)
def test_proto_name(number: int, name: str) -> None:
    assert proto_name(number) == name
    out = build([seg(1, PVT, PUB, None, None, proto=number)])
    assert view(out, "proto", "source_port", "dest_port") == [(name, None, None)]


def test_icmp_has_no_ports() -> None:
    out = build([seg(1, WEB1, DB, None, None, proto=1)])
    assert view(out, "reporter", "proto", "source_port", "dest_port") == [
        ("dst", "icmp", None, None), ("src", "icmp", None, None)]


# -- policies --------------------------------------------------------------------------------

def test_without_policies_everything_is_allowed_and_traces_are_null() -> None:
    rows = [seg(1, WEB1, DB, 1, 5432), seg(2, PUB, WEB1, 2, 80), seg(3, WEB1, PUB, 3, 443),
            seg(4, PVT, PUB, 4, 443)]
    out = build(rows)
    assert view(out, "reporter", "action", "enforced_policies", "pending_policies",
                "all_policies") == sorted([
        ("src", "allow", None, None, None), ("dst", "allow", None, None, None),
        ("dst", "allow", None, None, None), ("src", "allow", None, None, None),
        ("src", "allow", None, None, None)], key=repr)


TWILIO = [answer(MS2, "api.twilio.com", "52.1.2.3", at=0, ttl=60)]


@pytest.mark.parametrize(
    ("row", "dns", "expected"),
    [
        # frontend (dmz) → microservice1 (trusted): security and platform pass; default.dmz
        # egress rule 0 and default.trusted ingress rule 0 allow.
        (seg(1, FRONT, MS1, 40000, 8080), [],
         [("dst", "allow", [SEC, PLAT, "2|default|storefront/default.trusted|allow|0"]),
          ("src", "allow", [SEC, PLAT, "2|default|storefront/default.dmz|allow|0"])]),
        # frontend → backend (restricted): default.dmz egress falls to its rule 2, Deny.
        (seg(1, FRONT, BACKEND, 40000, 8080), [],
         [("src", "deny", [SEC, PLAT, "2|default|storefront/default.dmz|deny|2"])]),
        # backend → frontend: default.restricted egress rule 0 allows; default.dmz ingress
        # rule 1 denies (the source is not in 18.0.0.0/16).
        (seg(1, BACKEND, FRONT, 40000, 8080), [],
         [("dst", "deny", [SEC, PLAT, "2|default|storefront/default.dmz|deny|1"]),
          ("src", "allow", [SEC, PLAT, "2|default|storefront/default.restricted|allow|0"])]),
        # From 18.0.0.0/16 (in the "public" GlobalNetworkSet) to frontend: dmz ingress rule 0.
        (seg(1, "18.0.5.5", FRONT, 40000, 8080), [],
         [("dst", "allow", [SEC, PLAT, "2|default|storefront/default.dmz|allow|0"])]),
        # DNS through the kube-dns Service: platform.allow-kube-dns rule 0 at the client;
        # nothing selects coredns in the default tier, so its namespace profile allows.
        (seg(1, MS1, COREDNS, 40000, 53, proto=17, orig=(KUBE_DNS_SVC, 53)), [],
         [("dst", "allow", [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.kube-system|allow|0"]),
          ("src", "allow", [SEC, "1|platform|platform.allow-kube-dns|allow|0"])]),
        # microservice2 → Twilio by name (its DNS answer gives the domain): allowed by
        # platform.twilio-integration rule 0 ...
        (seg(1, MS2, "52.1.2.3", 40000, 443, start=5), TWILIO,
         [("src", "allow", [SEC, "1|platform|platform.twilio-integration|allow|0"])]),
        # ... and to another public address, without a name: its rule 1 denies.
        (seg(1, MS2, "52.1.2.4", 40000, 443, start=5), TWILIO,
         [("src", "deny", [SEC, "1|platform|platform.twilio-integration|deny|1"])]),
        # dev pods: no enforced policy selects them after the passes: the kns profile.
        (seg(1, CENTOS, NGINX, 40000, 80), [],
         [("dst", "allow", [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.dev|allow|0"]),
          ("src", "allow", [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.dev|allow|0"])]),
        # Between two non-workloads no policy applies: no trace.
        (seg(1, "192.168.5.5", "8.8.8.8", 40000, 53), [], [("src", "allow", None)]),
    ],
)
def test_storefront_enforced_policies(row: dict[str, Any], dns: list[dict[str, Any]],
                                      expected: list[tuple[str, str, list[str] | None]]
                                      ) -> None:
    out = build_storefront([row], dns=dns)
    assert view(out, "reporter", "action", "enforced_policies") == expected


def test_staged_policies_appear_in_pending_only() -> None:
    # The staged default-deny selects the dev namespace: pending ends in its end-of-tier
    # deny; enforced stays with the namespace profile.
    out = build_storefront([seg(1, CENTOS, NGINX, 40000, 80)])
    assert view(out, "reporter", "action", "pending_policies") == [
        ("dst", "allow", [SEC, PLAT, "2|default|default.staged:default-deny|deny|-1"]),
        ("src", "allow", [SEC, PLAT, "2|default|default.staged:default-deny|deny|-1"]),
    ]
    # No staged policy concerns frontend → microservice1: pending equals enforced.
    out = build_storefront([seg(1, FRONT, MS1, 40000, 8080)])
    assert [r["pending_policies"] == r["enforced_policies"] for r in out.to_pylist()] \
        == [True, True]


def test_storefront_domains_decide_the_verdict() -> None:
    out = build_storefront([seg(1, MS2, "52.1.2.3", 40000, 443, start=5)], dns=TWILIO)
    record = only(out, "src")
    assert (record["dest_type"], record["dest_name_aggr"], record["dest_namespace"],
            record["dest_labels"], record["dest_domains"]) == (
        "ns", "public", "-", [("type", "public")], ["api.twilio.com"])


# -- schema ----------------------------------------------------------------------------------

def test_output_schema_is_flows() -> None:
    out = build([seg(1, WEB1, DB, 1, 5432), seg(2, PVT, PUB, 2, 443)], host="node1")
    assert out.schema.equals(FLOWS, check_metadata=True)
    assert view(out, "host", "collector") == [("node1", "pcap")] * 3
    assert build_storefront([seg(1, FRONT, MS1, 40000, 8080)]).schema.equals(
        FLOWS, check_metadata=True)


@pytest.mark.parametrize("dns", [None, pa.Table.from_pylist([answer(WEB1, "x.example", PUB)],
                                                            schema=DNS)])
def test_empty_input_gives_an_empty_flows_table(dns: pa.Table | None) -> None:
    out = FlowBuilder(Resolver(INVENTORY)).build(SEGMENTS.empty_table(), dns)
    assert out.num_rows == 0
    assert out.schema.equals(FLOWS, check_metadata=True)


# -- a reused pod IP -------------------------------------------------------------------------

REUSED = Inventory.from_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"kind": "Pod", "metadata": {"name": "old", "namespace": "shop",
                                 "creationTimestamp": "2026-11-27T11:00:00Z"},
     "spec": {"containers": []}, "status": {"podIP": "10.1.0.50"}},
    {"kind": "Pod", "metadata": {"name": "new", "namespace": "shop",
                                 "creationTimestamp": "2026-11-27T12:01:40Z"},
     "spec": {"containers": []}, "status": {"podIP": "10.1.0.50"}},
]}))


def test_a_reused_ip_is_the_pod_that_held_it_when_the_connection_started() -> None:
    rows = [seg(1, "10.1.0.50", PUB, 1, 443, start=50),  # 12:00:50: old
            seg(2, "10.1.0.50", PUB, 2, 443, start=200)]  # 12:03:20: new (from 12:01:40)
    out = FlowBuilder(Resolver(REUSED), None, Aggregation(0, 0)).build(
        pa.Table.from_pylist(rows, schema=SEGMENTS))
    assert view(out, "source_port", "source_type", "source_name") == [
        (1, "wep", "old"), (2, "wep", "new")]


# -- property: counters are conserved --------------------------------------------------------

POOL = [*sorted(WEP_IPS), PUB, PVT, SET_IP, DB_SVC]


@st.composite
def segment_tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for conn in range(draw(st.integers(1, 12))):
        src, dst = draw(st.sampled_from(POOL)), draw(st.sampled_from(POOL))
        proto = draw(st.sampled_from([6, 17, 1]))
        sport, dport = (None, None) if proto == 1 else (
            draw(st.integers(1024, 1030)), draw(st.sampled_from([53, 443, 5432])))
        start = draw(st.integers(0, 299))
        for interval in sorted(draw(st.sets(st.integers(0, 2), min_size=1))):
            rows.append(seg(conn, src, dst, sport, dport, proto=proto, interval=interval,
                            start=start, fwd=(draw(st.integers(0, 9)), draw(st.integers(0, 999))),
                            rev=(draw(st.integers(0, 9)), draw(st.integers(0, 999))),
                            started=draw(st.booleans()), completed=draw(st.booleans())))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=segment_tables(), allowed=st.integers(0, 3), denied=st.integers(0, 3))
def test_counters_are_conserved(rows: list[dict[str, Any]], allowed: int, denied: int) -> None:
    out = build(rows, Aggregation(allowed, denied))

    def reporters(r: dict[str, Any]) -> list[str]:
        src_wep, dst_wep = r["src_ip"] in WEP_IPS, r["dst_ip"] in WEP_IPS
        return [name for name, yes in (("src", src_wep or not dst_wep), ("dst", dst_wep)) if yes]

    records = out.to_pylist()
    assert sum(r["bytes_in"] + r["bytes_out"] for r in records) == sum(
        (r["bytes_fwd"] + r["bytes_rev"]) * len(reporters(r)) for r in rows)
    assert sum(r["packets_in"] + r["packets_out"] for r in records) == sum(
        (r["packets_fwd"] + r["packets_rev"]) * len(reporters(r)) for r in rows)
    for reporter in ("src", "dst"):
        mine = [r for r in records if r["reporter"] == reporter]
        reported = [r for r in rows if reporter in reporters(r)]
        assert sum(r["num_flows"] for r in mine) == len(
            {(r["conn_id"], r["start_time"]) for r in reported})
        assert sum(r["num_flows_started"] for r in mine) == sum(r["started"] for r in reported)
        assert sum(r["num_flows_completed"] for r in mine) == sum(
            r["completed"] for r in reported)
    assert {r["action"] for r in records} <= {"allow"}
