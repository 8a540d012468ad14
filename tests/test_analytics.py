"""The analytics layer on a small hand-made store: the ``policy_hits`` and ``endpoints`` views,
the policies board (reference/calico.md §9), the flow visualizer's edges and its filters,
unprotected traffic, external egress, top talkers, the time series, and time windows.

The store has twelve Calico flow-log records over two hours (10:00-10:30 and 11:00-11:25 on
2026-11-27, five-minute flush intervals). Every expected value below is worked out by hand
from the RECORDS table and the spec; the arithmetic is in the comments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from analytics import queries
from analytics.db import connect, query
from analytics.window import Window, WindowError, parse_time
from ingest.schema import FLOWS
from ingest.store import Store

GNP, NP, KNP = "GlobalNetworkPolicy", "NetworkPolicy", "KubernetesNetworkPolicy"
SGNP, SNP, PROFILE, EOT = ("StagedGlobalNetworkPolicy", "StagedNetworkPolicy", "Profile",
                           "EndOfTier")


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 27, hour, minute, tzinfo=UTC)


FRONTEND = ("wep", "storefront", "frontend-*", [("app", "frontend")])
BACKEND = ("wep", "storefront", "backend-*", [("app", "backend")])
BATCH = ("wep", "jobs", "batch-job-*", [("app", "batch")])
PROMETHEUS = ("wep", "monitoring", "prometheus-*", [("app", "prometheus")])
COREDNS = ("wep", "kube-system", "coredns-*", [("k8s-app", "kube-dns")])
PUB = ("net", "-", "pub", None)
PVT = ("net", "-", "pvt", None)
GATEWAYS = ("ns", "storefront", "payment-gateways", None)  # a NetworkSet (type ns, §1.3)

GATE_PASS_1 = "0|security|security.gate|pass|1"
TRUSTED_0 = "1|default|storefront/default.trusted|allow|0"
PROFILE_SF = "0|__PROFILE__|__PROFILE__.kns.storefront|allow|0"


def record(name: str, start: datetime, host: str, reporter: str, action: str,
           src: tuple[Any, ...], dst: tuple[Any, ...], port: int, proto: str,
           enforced: list[str], pending: list[str] | None,
           packets: tuple[int, int], bytes_: tuple[int, int], connections: int,
           domains: list[str] | None = None) -> dict[str, Any]:
    """One record (``name`` only labels it here); ``packets``/``bytes_`` are (in, out) at the
    reporting endpoint (§1.2)."""
    side = {}
    for prefix, (kind, ns, aggr, labels) in (("source", src), ("dest", dst)):
        side |= {f"{prefix}_type": kind, f"{prefix}_namespace": ns,
                 f"{prefix}_name_aggr": aggr,
                 f"{prefix}_name": aggr if kind == "ns" else "-",
                 f"{prefix}_labels": labels}
    return {"start_time": start, "end_time": start + timedelta(minutes=5), "host": host,
            "reporter": reporter, "action": action, **side, "dest_port": port, "proto": proto,
            "dest_domains": domains, "enforced_policies": enforced,
            "pending_policies": pending, "packets_in": packets[0], "packets_out": packets[1],
            "bytes_in": bytes_[0], "bytes_out": bytes_[1], "num_flows": connections,
            "num_flows_started": connections, "num_flows_completed": 0,
            "collector": "calico"}


RECORDS = [
    # R1 frontend → backend, egress at the frontend's node. Enforced: security.gate passes,
    # default.trusted allows. Pending: the staged storefront/lockdown (earlier in tier
    # default) would deny — it keeps its position 1; gate rule 1 is in both traces.
    record("R1", at(10, 0), "node-1", "src", "allow", FRONTEND, BACKEND, 8080, "tcp",
           [GATE_PASS_1, TRUSTED_0],
           [GATE_PASS_1, "1|default|storefront/default.staged:lockdown|deny|0"],
           (10, 12), (1000, 1200), 2),
    # R2 the same connections at the backend's node (ingress); pending = enforced.
    record("R2", at(10, 0), "node-2", "dst", "allow", FRONTEND, BACKEND, 8080, "tcp",
           ["0|security|security.gate|pass|3",
            "1|default|storefront/knp.default.allow-frontend|allow|0"],
           ["0|security|security.gate|pass|3",
            "1|default|storefront/knp.default.allow-frontend|allow|0"],
           (12, 10), (1200, 1000), 2),
    # R4 frontend → the internet on 25, denied by security.gate egress rule 0.
    record("R4", at(10, 5), "node-1", "src", "deny", FRONTEND, PUB, 25, "tcp",
           ["0|security|security.gate|deny|0"], ["0|security|security.gate|deny|0"],
           (0, 3), (0, 180), 3, domains=["mail.example.com"]),
    # R5 a batch job → a private address, denied at the end of tier platform (-1, credited to
    # the policy that selected it). Pending: a staged GNP quarantine at position 0 passes, so
    # gate rule 1 is at position 1 there and 0 in the enforced trace: still one rule.
    record("R5", at(10, 10), "node-3", "src", "deny", BATCH, PVT, 5432, "tcp",
           [GATE_PASS_1, "1|platform|jobs/platform.egress-guard|deny|-1"],
           ["0|security|security.staged:quarantine|pass|0", "1|security|security.gate|pass|1",
            "2|platform|jobs/platform.egress-guard|deny|-1"],
           (0, 4), (0, 240), 4),
    # R7 prometheus → backend, ingress allowed by the namespace profile only (unprotected).
    record("R7", at(10, 15), "node-2", "dst", "allow", PROMETHEUS, BACKEND, 9090, "tcp",
           [PROFILE_SF], [PROFILE_SF], (5, 5), (500, 2500), 1),
    # R9 backend → a NetworkSet, allowed by trusted egress rule 2.
    record("R9", at(10, 20), "node-2", "src", "allow", BACKEND, GATEWAYS, 443, "tcp",
           ["0|default|storefront/default.trusted|allow|2"],
           ["0|default|storefront/default.trusted|allow|2"], (7, 8), (7000, 800), 2),
    # R11 backend → the internet, no domain known; trusted egress rule 2 again.
    record("R11", at(10, 25), "node-2", "src", "allow", BACKEND, PUB, 443, "tcp",
           ["0|default|storefront/default.trusted|allow|2"],
           ["0|default|storefront/default.trusted|allow|2"], (1, 1), (50, 50), 1),
    # --- second hour ---
    # R3 frontend → backend again; the staged lockdown is gone, pending = enforced.
    record("R3", at(11, 0), "node-1", "src", "allow", FRONTEND, BACKEND, 8080, "tcp",
           [GATE_PASS_1, TRUSTED_0], [GATE_PASS_1, TRUSTED_0], (1, 2), (100, 200), 1),
    # R6 the internet → frontend, ingress, in the OSS format: gnp:gate passes (rule 2), tier
    # default ends with no policy (eot:__NO_MATCH__, action eot-deny = deny).
    record("R6", at(11, 5), "node-1", "dst", "deny", PUB, FRONTEND, 443, "tcp",
           ["0|security|gnp:gate|pass|2", "1|default|eot:__NO_MATCH__|eot-deny|-1"],
           ["0|security|gnp:gate|pass|2", "1|default|eot:__NO_MATCH__|eot-deny|-1"],
           (6, 0), (360, 0), 6),
    # R8 frontend → api.twilio.com: profile allow (unprotected); pending: the staged GNP
    # default.default-deny selects it and has no rule: its own -1 deny (§1.4).
    record("R8", at(11, 10), "node-1", "src", "allow", FRONTEND, PUB, 443, "tcp",
           [PROFILE_SF], ["0|default|default.staged:default-deny|deny|-1"],
           (20, 15), (20000, 3000), 5, domains=["api.twilio.com"]),
    # R10 frontend → two CDN names (counted under each by external), trusted rule 1.
    record("R10", at(11, 15), "node-1", "src", "allow", FRONTEND, PUB, 443, "tcp",
           ["0|default|storefront/default.trusted|allow|1"],
           ["0|default|storefront/default.trusted|allow|1"], (3, 2), (3000, 200), 1,
           domains=["static.example.com", "cdn.example.com"]),
    # R12 frontend → CoreDNS at CoreDNS's node, a legacy hit without rule index (-2), no
    # pending trace. The frontend's labels changed: this is its latest record.
    record("R12", at(11, 20), "node-3", "dst", "allow",
           ("wep", "storefront", "frontend-*", [("app", "frontend"), ("version", "v2")]),
           COREDNS, 53, "udp", ["0|__PROFILE__|__PROFILE__.kns.kube-system|allow"], None,
           (2, 2), (140, 260), 2),
]


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("analytics") / "store"
    with Store(root).writer() as w:
        for host in ("node-1", "node-2", "node-3"):
            w.add_flows(pa.Table.from_pylist([r for r in RECORDS if r["host"] == host],
                                             schema=FLOWS), host=host)
        w.commit()
    return connect(root)


def rows(table: pa.Table, *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in columns) for r in table.to_pylist()]


# --- views ---------------------------------------------------------------------------------

def test_policy_hits_has_one_row_per_hit_of_either_trace(con: duckdb.DuckDBPyConnection) -> None:
    # enforced + pending per record: R1 2+2, R2 2+2, R3 2+2, R4 1+1, R5 2+3, R6 2+2, R7 1+1,
    # R8 1+1, R9 1+1, R10 1+1, R11 1+1, R12 1+0 (null pending) = 34
    assert query(con, "SELECT count(*) AS n FROM policy_hits").to_pylist() == [{"n": 34}]
    assert query(con, "SELECT trace, count(*) AS n FROM policy_hits GROUP BY trace "
                      "ORDER BY trace").to_pylist() == [{"trace": "enforced", "n": 17},
                                                        {"trace": "pending", "n": 17}]


@pytest.mark.parametrize(("hit", "trace", "expected"), [
    # (position, tier, kind, namespace, policy, action, rule, staged, end_of_tier) + record
    ("1|default|eot:__NO_MATCH__|eot-deny|-1", "enforced",
     (1, "default", EOT, None, "__NO_MATCH__", "deny", -1, False, True, "dst", "deny", 360)),
    ("0|__PROFILE__|__PROFILE__.kns.kube-system|allow", "enforced",
     (0, "__PROFILE__", PROFILE, None, "kns.kube-system", "allow", -2, False, False, "dst",
      "allow", 140)),
    ("0|security|security.staged:quarantine|pass|0", "pending",
     (0, "security", SGNP, None, "quarantine", "pass", 0, True, False, "src", "deny", 0)),
    ("0|default|default.staged:default-deny|deny|-1", "pending",
     (0, "default", SGNP, None, "default-deny", "deny", -1, True, True, "src", "allow", 20000)),
    ("1|default|storefront/knp.default.allow-frontend|allow|0", "pending",
     (1, "default", KNP, "storefront", "allow-frontend", "allow", 0, False, False, "dst",
      "allow", 1200)),
    ("2|platform|jobs/platform.egress-guard|deny|-1", "pending",
     (2, "platform", NP, "jobs", "egress-guard", "deny", -1, False, True, "src", "deny", 0)),
])
def test_policy_hits_parses_and_carries_the_record(con: duckdb.DuckDBPyConnection, hit: str,
                                                   trace: str,
                                                   expected: tuple[Any, ...]) -> None:
    got = query(con, "SELECT position, tier, kind, namespace, policy, action, rule, staged, "
                     "end_of_tier, reporter, flow_action, bytes_in FROM policy_hits "
                     "WHERE hit = $hit AND trace = $trace", {"hit": hit, "trace": trace})
    assert [tuple(r.values()) for r in got.to_pylist()] == [expected]


def test_endpoints_are_the_workloads_on_either_side(con: duckdb.DuckDBPyConnection) -> None:
    got = query(con, "SELECT * FROM endpoints ORDER BY namespace, name_aggr").to_pylist()
    assert got == [
        # jobs/batch-job-*: R5 source
        {"type": "wep", "namespace": "jobs", "name_aggr": "batch-job-*",
         "labels": [("app", "batch")], "first_seen": at(10, 10), "last_seen": at(10, 15),
         "records": 1, "hosts": ["node-3"]},
        {"type": "wep", "namespace": "kube-system", "name_aggr": "coredns-*",
         "labels": [("k8s-app", "kube-dns")], "first_seen": at(11, 20),
         "last_seen": at(11, 25), "records": 1, "hosts": ["node-3"]},
        {"type": "wep", "namespace": "monitoring", "name_aggr": "prometheus-*",
         "labels": [("app", "prometheus")], "first_seen": at(10, 15),
         "last_seen": at(10, 20), "records": 1, "hosts": ["node-2"]},
        # backend-*: dest of R1, R2, R3, R7, source of R9, R11 = 6; latest R3 (11:05);
        # hosts node-1 (R1, R3), node-2 (R2, R7, R9, R11)
        {"type": "wep", "namespace": "storefront", "name_aggr": "backend-*",
         "labels": [("app", "backend")], "first_seen": at(10, 0), "last_seen": at(11, 5),
         "records": 6, "hosts": ["node-1", "node-2"]},
        # frontend-*: source of R1, R2, R3, R4, R8, R10, R12, dest of R6 = 8; labels of the
        # latest record, R12 (11:25)
        {"type": "wep", "namespace": "storefront", "name_aggr": "frontend-*",
         "labels": [("app", "frontend"), ("version", "v2")], "first_seen": at(10, 0),
         "last_seen": at(11, 25), "records": 8, "hosts": ["node-1", "node-2", "node-3"]},
    ]


# --- the policies board --------------------------------------------------------------------

_ACTIONS = {"allow": "allowed", "deny": "denied", "pass": "passed"}


def board_row(tier: str, kind: str, namespace: str | None, policy: str, direction: str,
              rule: int, staged: bool, end_of_tier: bool, action: str,
              packets: tuple[int, int], bytes_: tuple[int, int], connections: int,
              first: datetime, last: datetime) -> dict[str, Any]:
    """A board row crediting one action: packets/bytes (in, out); connections go to _in for
    ingress (dst-reported) rows and _out for egress (src-reported) ones (§9)."""
    row: dict[str, Any] = {"tier": tier, "kind": kind, "namespace": namespace,
                           "policy": policy, "direction": direction, "rule": rule,
                           "staged": staged, "end_of_tier": end_of_tier,
                           "first_hit": first, "last_hit": last}
    for a in _ACTIONS.values():
        for unit in ("packets", "bytes", "connections"):
            row |= {f"{a}_{unit}_in": 0, f"{a}_{unit}_out": 0}
    a = _ACTIONS[action]
    row |= {f"{a}_packets_in": packets[0], f"{a}_packets_out": packets[1],
            f"{a}_bytes_in": bytes_[0], f"{a}_bytes_out": bytes_[1],
            f"{a}_connections_{'in' if direction == 'ingress' else 'out'}": connections}
    return row


# In board order: tier (profiles last), namespace (global first), policy, direction, rule.
BOARD = [
    # R6 (dst): OSS end of tier, deny
    board_row("default", EOT, None, "__NO_MATCH__", "ingress", -1, False, True, "deny",
              (6, 0), (360, 0), 6, at(11, 5), at(11, 10)),
    # R8 (src): the staged default-deny's own end-of-tier hit (pending only)
    board_row("default", SGNP, None, "default-deny", "egress", -1, True, True, "deny",
              (20, 15), (20000, 3000), 5, at(11, 10), at(11, 15)),
    # R2 (dst), once although in both traces
    board_row("default", KNP, "storefront", "allow-frontend", "ingress", 0, False, False,
              "allow", (12, 10), (1200, 1000), 2, at(10, 0), at(10, 5)),
    # R1 (src): the staged lockdown, pending only
    board_row("default", SNP, "storefront", "lockdown", "egress", 0, True, False, "deny",
              (10, 12), (1000, 1200), 2, at(10, 0), at(10, 5)),
    # R1 + R3: packets in 10+1, out 12+2; bytes 1000+100, 1200+200; connections 2+1
    board_row("default", NP, "storefront", "trusted", "egress", 0, False, False, "allow",
              (11, 14), (1100, 1400), 3, at(10, 0), at(11, 5)),
    # R10
    board_row("default", NP, "storefront", "trusted", "egress", 1, False, False, "allow",
              (3, 2), (3000, 200), 1, at(11, 15), at(11, 20)),
    # R9 + R11: packets 7+1, 8+1; bytes 7000+50, 800+50; connections 2+1
    board_row("default", NP, "storefront", "trusted", "egress", 2, False, False, "allow",
              (8, 9), (7050, 850), 3, at(10, 20), at(10, 30)),
    # R5: end of tier platform, credited to egress-guard
    board_row("platform", NP, "jobs", "egress-guard", "egress", -1, False, True, "deny",
              (0, 4), (0, 240), 4, at(10, 10), at(10, 15)),
    # R4
    board_row("security", GNP, None, "gate", "egress", 0, False, False, "deny",
              (0, 3), (0, 180), 3, at(10, 5), at(10, 10)),
    # R1 + R3 + R5, each once although in both traces: packets in 10+1+0, out 12+2+4;
    # bytes 1000+100+0, 1200+200+240; connections 2+1+4
    board_row("security", GNP, None, "gate", "egress", 1, False, False, "pass",
              (11, 18), (1100, 1640), 7, at(10, 0), at(11, 5)),
    # R6, written gnp:gate (OSS) — the same policy as security.gate
    board_row("security", GNP, None, "gate", "ingress", 2, False, False, "pass",
              (6, 0), (360, 0), 6, at(11, 5), at(11, 10)),
    # R2
    board_row("security", GNP, None, "gate", "ingress", 3, False, False, "pass",
              (12, 10), (1200, 1000), 2, at(10, 0), at(10, 5)),
    # R5 pending: the staged quarantine
    board_row("security", SGNP, None, "quarantine", "egress", 0, True, False, "pass",
              (0, 4), (0, 240), 4, at(10, 10), at(10, 15)),
    # R12: legacy hit, rule unknown
    board_row("__PROFILE__", PROFILE, None, "kns.kube-system", "ingress", -2, False, False,
              "allow", (2, 2), (140, 260), 2, at(11, 20), at(11, 25)),
    # R8
    board_row("__PROFILE__", PROFILE, None, "kns.storefront", "egress", 0, False, False,
              "allow", (20, 15), (20000, 3000), 5, at(11, 10), at(11, 15)),
    # R7
    board_row("__PROFILE__", PROFILE, None, "kns.storefront", "ingress", 0, False, False,
              "allow", (5, 5), (500, 2500), 1, at(10, 15), at(10, 20)),
]


@pytest.mark.parametrize("window", [
    Window(),  # both hours whole: read from the hourly hit rollups
    Window(at(10, 1), at(11, 59)),  # both hours cut: read from the records
    Window(at(9, 0), at(11, 30)),  # hour 10 from its rollup, hour 11 from its records
], ids=["rollups", "records", "mixed"])
def test_board_counts_every_rule_once_per_record(con: duckdb.DuckDBPyConnection,
                                                 window: Window) -> None:
    assert queries.board(con, window).to_pylist() == BOARD


def test_board_window_without_the_first_hour(con: duckdb.DuckDBPyConnection) -> None:
    # From 11:00 only R3, R6, R8, R10, R12 overlap; hour-10 records all end by 10:30.
    r3 = {"packets": (1, 2), "bytes_": (100, 200), "connections": 1,
          "first": at(11, 0), "last": at(11, 5)}
    expected = [
        BOARD[0], BOARD[1],
        board_row("default", NP, "storefront", "trusted", "egress", 0, False, False,
                  "allow", **r3),
        BOARD[5],
        board_row("security", GNP, None, "gate", "egress", 1, False, False, "pass", **r3),
        BOARD[10], BOARD[13], BOARD[14],
    ]
    assert queries.board(con, Window(since=at(11, 0))).to_pylist() == expected
    # until 10:10 (exclusive): R1, R2 (10:00) and R4 (10:05)
    got = queries.board(con, Window(until=at(10, 10)))
    assert rows(got, "tier", "policy", "direction", "rule") == [
        ("default", "allow-frontend", "ingress", 0), ("default", "lockdown", "egress", 0),
        ("default", "trusted", "egress", 0), ("security", "gate", "egress", 0),
        ("security", "gate", "egress", 1), ("security", "gate", "ingress", 3)]
    assert rows(got, "passed_packets_out", "allowed_packets_out")[4] == (12, 0)  # R1 only


# --- flows, unprotected, external, talkers, time series ------------------------------------

FLOW_KEY = ("source_namespace", "source_name_aggr", "source_type", "dest_namespace",
            "dest_name_aggr", "dest_type", "dest_port", "proto", "action", "reporter")
FLOW_VALUES = ("dest_domains", "connections", "packets", "bytes_in", "bytes_out",
               "first_seen", "last_seen")
# Edges in order (source ns, source, dest ns, dest, port, proto, action, reporter); "-" sorts
# before letters. packets = in + out.
EDGES = {
    "R6": (("-", "pub", "net", "storefront", "frontend-*", "wep", 443, "tcp", "deny", "dst"),
           (None, 6, 6, 360, 0, at(11, 5), at(11, 10))),
    "R5": (("jobs", "batch-job-*", "wep", "-", "pvt", "net", 5432, "tcp", "deny", "src"),
           (None, 4, 4, 0, 240, at(10, 10), at(10, 15))),
    "R7": (("monitoring", "prometheus-*", "wep", "storefront", "backend-*", "wep", 9090, "tcp",
            "allow", "dst"), (None, 1, 10, 500, 2500, at(10, 15), at(10, 20))),
    "R11": (("storefront", "backend-*", "wep", "-", "pub", "net", 443, "tcp", "allow", "src"),
            (None, 1, 2, 50, 50, at(10, 25), at(10, 30))),
    "R9": (("storefront", "backend-*", "wep", "storefront", "payment-gateways", "ns", 443,
            "tcp", "allow", "src"), (None, 2, 15, 7000, 800, at(10, 20), at(10, 25))),
    "R4": (("storefront", "frontend-*", "wep", "-", "pub", "net", 25, "tcp", "deny", "src"),
           (["mail.example.com"], 3, 3, 0, 180, at(10, 5), at(10, 10))),
    # R8 + R10: domains merged and sorted; connections 5+1; packets 35+5; bytes 20000+3000,
    # 3000+200
    "R8+R10": (("storefront", "frontend-*", "wep", "-", "pub", "net", 443, "tcp", "allow",
                "src"), (["api.twilio.com", "cdn.example.com", "static.example.com"], 6, 40,
                         23000, 3200, at(11, 10), at(11, 20))),
    "R12": (("storefront", "frontend-*", "wep", "kube-system", "coredns-*", "wep", 53, "udp",
             "allow", "dst"), (None, 2, 4, 140, 260, at(11, 20), at(11, 25))),
    "R2": (("storefront", "frontend-*", "wep", "storefront", "backend-*", "wep", 8080, "tcp",
            "allow", "dst"), (None, 2, 22, 1200, 1000, at(10, 0), at(10, 5))),
    # R1 + R3: connections 2+1, packets 22+3, bytes in 1000+100, out 1200+200
    "R1+R3": (("storefront", "frontend-*", "wep", "storefront", "backend-*", "wep", 8080,
               "tcp", "allow", "src"), (None, 3, 25, 1100, 1400, at(10, 0), at(11, 5))),
}


@pytest.mark.parametrize(("filters", "edges"), [
    ({}, list(EDGES)),
    ({"namespace": "jobs"}, ["R5"]),
    ({"namespace": "kube-system"}, ["R12"]),  # the destination's namespace counts too
    ({"workload": "backend"}, ["R7", "R11", "R9", "R2", "R1+R3"]),  # either side's prefix
    ({"workload": "prom"}, ["R7"]),
    ({"action": "deny"}, ["R6", "R5", "R4"]),
    ({"reporter": "dst"}, ["R6", "R7", "R12", "R2"]),
    ({"namespace": "storefront", "action": "deny", "reporter": "src"}, ["R4"]),
    ({"workload": "nothing"}, []),
], ids=str)
def test_flows_edges_and_filters(con: duckdb.DuckDBPyConnection, filters: dict[str, str],
                                 edges: list[str]) -> None:
    got = queries.flows(con, **filters)
    assert list(zip(rows(got, *FLOW_KEY), rows(got, *FLOW_VALUES), strict=True)) == [
        EDGES[e] for e in edges]


def test_flows_window(con: duckdb.DuckDBPyConnection) -> None:
    got = queries.flows(con, Window(since=at(11, 0)), workload="backend")
    # only R3 is left of R1+R3; the other backend edges are all in the first hour
    assert rows(got, *FLOW_VALUES) == [(None, 1, 3, 100, 200, at(11, 0), at(11, 5))]


UNPROTECTED = ("namespace", "workload", "reporter", "source_namespace", "source_name_aggr",
               "dest_namespace", "dest_name_aggr", "dest_type", "dest_port", "proto",
               "connections", "bytes", "first_seen", "last_seen")
# The allowed records whose enforced trace has a profile hit: R7, R8, R12; the workload is the
# reporting end's. bytes = in + out.
R12_UNPROTECTED = ("kube-system", "coredns-*", "dst", "storefront", "frontend-*",
                   "kube-system", "coredns-*", "wep", 53, "udp", 2, 400, at(11, 20),
                   at(11, 25))
R7_UNPROTECTED = ("storefront", "backend-*", "dst", "monitoring", "prometheus-*", "storefront",
                  "backend-*", "wep", 9090, "tcp", 1, 3000, at(10, 15), at(10, 20))
R8_UNPROTECTED = ("storefront", "frontend-*", "src", "storefront", "frontend-*", "-", "pub",
                  "net", 443, "tcp", 5, 23000, at(11, 10), at(11, 15))


def test_unprotected_is_allowed_traffic_decided_by_a_profile(
        con: duckdb.DuckDBPyConnection) -> None:
    assert rows(queries.unprotected(con), *UNPROTECTED) == [R12_UNPROTECTED, R7_UNPROTECTED,
                                                           R8_UNPROTECTED]
    assert rows(queries.unprotected(con, namespace="monitoring"), *UNPROTECTED) == [
        R7_UNPROTECTED]
    assert rows(queries.unprotected(con, Window(since=at(11, 0))), *UNPROTECTED) == [
        R12_UNPROTECTED, R8_UNPROTECTED]


EXTERNAL = ("source_namespace", "source_name_aggr", "destination", "dest_type", "dest_port",
            "proto", "action", "connections", "bytes", "first_seen", "last_seen")


def test_external_by_domain_network_set_or_pvt_pub(con: duckdb.DuckDBPyConnection) -> None:
    # src-reported workload → ns/net records: R4, R5, R8, R9, R10 (under both names), R11;
    # by bytes (in + out) descending
    assert rows(queries.external(con), *EXTERNAL) == [
        ("storefront", "frontend-*", "api.twilio.com", "net", 443, "tcp", "allow", 5, 23000,
         at(11, 10), at(11, 15)),
        ("storefront", "backend-*", "networkset:payment-gateways", "ns", 443, "tcp", "allow",
         2, 7800, at(10, 20), at(10, 25)),
        ("storefront", "frontend-*", "cdn.example.com", "net", 443, "tcp", "allow", 1, 3200,
         at(11, 15), at(11, 20)),
        ("storefront", "frontend-*", "static.example.com", "net", 443, "tcp", "allow", 1, 3200,
         at(11, 15), at(11, 20)),
        ("jobs", "batch-job-*", "pvt", "net", 5432, "tcp", "deny", 4, 240, at(10, 10),
         at(10, 15)),
        ("storefront", "frontend-*", "mail.example.com", "net", 25, "tcp", "deny", 3, 180,
         at(10, 5), at(10, 10)),
        ("storefront", "backend-*", "pub", "net", 443, "tcp", "allow", 1, 100, at(10, 25),
         at(10, 30)),
    ]
    assert rows(queries.external(con, namespace="jobs"), "destination", "bytes") == [
        ("pvt", 240)]
    assert rows(queries.external(con, Window(until=at(10, 20))), "destination") == [
        ("pvt",), ("mail.example.com",)]


TALKERS = ("namespace", "workload", "bytes_sent", "bytes_received", "connections",
           "denied_connections")


def test_talkers_at_the_reporting_end(con: duckdb.DuckDBPyConnection) -> None:
    # frontend-* reports R1, R3, R4, R8, R10 (src) and R6 (dst): sent 1200+200+180+3000+200+0
    # = 4780, received 1000+100+0+20000+3000+360 = 24460, connections 2+1+3+5+1+6 = 18,
    # denied R4 + R6 = 9. backend-*: R2, R7 (dst), R9, R11 (src): sent 1000+2500+800+50 =
    # 4350, received 1200+500+7000+50 = 8750, connections 2+1+2+1 = 6. coredns-*: R12.
    # batch-job-*: R5.
    got = queries.talkers(con)
    assert rows(got, *TALKERS[:5]) == [
        ("storefront", "frontend-*", 4780, 24460, 18),
        ("storefront", "backend-*", 4350, 8750, 6),
        ("kube-system", "coredns-*", 260, 140, 2),
        ("jobs", "batch-job-*", 240, 0, 4),
    ]
    assert rows(got, "workload", "denied_connections")[::3] == [("frontend-*", 9),
                                                                ("batch-job-*", 4)]
    assert rows(queries.talkers(con, limit=2), "workload") == [("frontend-*",), ("backend-*",)]


def test_talkers_count_zero_denied_connections_as_zero(con: duckdb.DuckDBPyConnection) -> None:
    got = queries.talkers(con)
    assert rows(got, "workload", "denied_connections")[1:3] == [("backend-*", 0),
                                                                ("coredns-*", 0)]


def test_timeseries_per_flush_interval(con: duckdb.DuckDBPyConnection) -> None:
    columns = ("start_time", "records", "allowed_connections", "denied_connections", "bytes")
    hour_11 = [
        (at(11, 0), 1, 1, 0, 300),  # R3
        (at(11, 5), 1, 0, 6, 360),  # R6
        (at(11, 10), 1, 5, 0, 23000),  # R8
        (at(11, 15), 1, 1, 0, 3200),  # R10
        (at(11, 20), 1, 2, 0, 400),  # R12
    ]
    assert rows(queries.timeseries(con), *columns) == [
        (at(10, 0), 2, 4, 0, 4400),  # R1 + R2: 2+2 connections, 2200 + 2200 bytes
        (at(10, 5), 1, 0, 3, 180),  # R4
        (at(10, 10), 1, 0, 4, 240),  # R5
        (at(10, 15), 1, 1, 0, 3000),  # R7
        (at(10, 20), 1, 2, 0, 7800),  # R9
        (at(10, 25), 1, 1, 0, 100),  # R11
        *hour_11,
    ]
    assert rows(queries.timeseries(con, Window(since=at(11, 0))), *columns) == hour_11


# --- windows -------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", at(11, 0)),
    ("30m", at(11, 30)),
    ("90s", datetime(2026, 11, 27, 11, 58, 30, tzinfo=UTC)),
    ("2d", datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),
    ("2w", datetime(2026, 11, 13, 12, 0, tzinfo=UTC)),
    (" 24h ", datetime(2026, 11, 26, 12, 0, tzinfo=UTC)),
    ("2026-11-27T11:00:00Z", at(11, 0)),
    ("2026-11-27T12:00:00+01:00", at(11, 0)),
    ("2026-11-27T11:00:00", at(11, 0)),  # no zone: UTC
    ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
    (None, None),
    ("", None),
])
def test_parse_time(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text, now=NOW) == expected


def test_relative_since_excludes_the_first_hour(con: duckdb.DuckDBPyConnection) -> None:
    window = Window.parse("1h", None, now=NOW)
    assert window == Window(since=at(11, 0))
    assert window.describe() == "2026-11-27T11:00:00Z to the last record"
    assert [r["start_time"] for r in queries.timeseries(con, window).to_pylist()] == [
        at(11, 0), at(11, 5), at(11, 10), at(11, 15), at(11, 20)]
    # an offset time is the same instant
    offset = Window.parse("2026-11-27T12:00:00+01:00", None, now=NOW)
    assert queries.timeseries(con, offset) == queries.timeseries(con, window)
    both = Window.parse("2h", "100m", now=NOW)  # 10:00 to 10:20
    assert both.describe() == "2026-11-27T10:00:00Z to 2026-11-27T10:20:00Z"
    assert [r["start_time"] for r in queries.timeseries(con, both).to_pylist()] == [
        at(10, 0), at(10, 5), at(10, 10), at(10, 15)]
    assert Window().describe() == "the first record to the last record"


_ACCEPTED = "is not a duration (30m, 24h, 7d, 2w) or an ISO 8601 time (2026-11-27T10:00:00Z)"


@pytest.mark.parametrize(("since", "until", "message"), [
    ("yesterday", None, f"--since: 'yesterday' {_ACCEPTED}"),
    ("24H", None, f"--since: '24H' {_ACCEPTED}"),
    ("-1h", None, f"--since: '-1h' {_ACCEPTED}"),
    ("1.5h", None, f"--since: '1.5h' {_ACCEPTED}"),
    (None, "5x", f"--until: '5x' {_ACCEPTED}"),
    ("30m", "1h", "--until '1h' is not after --since '30m'"),
    ("1h", "1h", "--until '1h' is not after --since '1h'"),
    ("2026-11-27T11:00:00Z", "2026-11-27T10:00:00Z",
     "--until '2026-11-27T10:00:00Z' is not after --since '2026-11-27T11:00:00Z'"),
])
def test_bad_windows_say_what_is_accepted(since: str | None, until: str | None,
                                          message: str) -> None:
    with pytest.raises(WindowError) as info:
        Window.parse(since, until, now=NOW)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


# --- records reported with transit policy (reporter "src,fwd" / "dst,fwd", §1.2) ------------

@pytest.fixture
def transit(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    fwd = [
        record("F1", at(10, 0), "node-1", "dst,fwd", "allow", BATCH, FRONTEND, 8080, "tcp",
               [TRUSTED_0], None, (4, 2), (400, 200), 3),
        record("F2", at(10, 0), "node-1", "src,fwd", "allow", BATCH, FRONTEND, 8080, "tcp",
               ["0|default|jobs/default.out|allow|0"], None, (2, 4), (200, 400), 3),
        record("F3", at(10, 5), "node-1", "src,fwd", "allow", BATCH, PUB, 443, "tcp",
               ["0|__PROFILE__|__PROFILE__.kns.jobs|allow|0"], None, (1, 2), (10, 20), 1),
    ]
    with Store(tmp_path).writer() as w:
        w.add_flows(pa.Table.from_pylist(fwd, schema=FLOWS), host="node-1")
        w.commit()
    return connect(tmp_path)


def test_board_credits_connections_of_transit_reported_records(
        transit: duckdb.DuckDBPyConnection) -> None:
    # §9: connections go to _in for dst-reported, _out for src-reported flows
    got = queries.board(transit)
    assert rows(got, "policy", "direction", "allowed_connections_in",
                "allowed_connections_out") == [("out", "egress", 0, 3),
                                               ("trusted", "ingress", 3, 0),
                                               ("kns.jobs", "egress", 0, 1)]


def test_talkers_count_src_fwd_at_the_source(transit: duckdb.DuckDBPyConnection) -> None:
    # F2 + F3 at batch-job-* (src,fwd): sent 400+20, received 200+10 = 630 bytes; F1 at
    # frontend-* (dst,fwd): sent 200, received 400 = 600 bytes
    assert rows(queries.talkers(transit), "namespace", "workload", "bytes_sent",
                "bytes_received") == [("jobs", "batch-job-*", 420, 210),
                                      ("storefront", "frontend-*", 200, 400)]


def test_unprotected_src_fwd_is_the_source_workload(transit: duckdb.DuckDBPyConnection) -> None:
    # F3: allowed by the jobs profile, reported at batch-job-*
    assert rows(queries.unprotected(transit), "namespace", "workload", "reporter",
                "dest_name_aggr") == [("jobs", "batch-job-*", "src,fwd", "pub")]
