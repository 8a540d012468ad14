"""Recommendation on a hand-made store: every peer category of reference/calico.md §7.3 at
workload granularity, stable selectors from a real-looking inventory, ports, DNS, CronJob
runs, flows that are not learnt, and the replay proof passing and failing.

The store holds flow-log records written directly (``Store.writer().add_flows``), each
allowed by the namespace profile unless the scenario says otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from analytics.db import connect, query
from analytics.window import Window
from ingest.inventory import Inventory
from ingest.schema import FLOWS
from ingest.store import Store
from policy import PolicySet, load_text
from recommend.engine import Recommendation, Request, recommend
from recommend.model import Category, Rule
from recommend.observe import records
from recommend.verify import enforced_set, replay

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
WINDOW = Window(T0 - timedelta(hours=1), T0 + timedelta(hours=2))

POLICIES = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: corp-nets, labels: {zone: corp}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: shop}
spec: {nets: [198.51.100.0/24]}
"""

WEB = {"app": "web", "pod-template-hash": "5d8f7c9b6d", "version": "v2",
       "helm.sh/chart": "web-1.2.3"}
API = {"app.kubernetes.io/name": "api", "app.kubernetes.io/instance": "prod",
       "app.kubernetes.io/version": "1.0.4", "pod-template-hash": "7c9d8b6f5c"}
CANARY = {"app.kubernetes.io/name": "api", "app.kubernetes.io/instance": "canary",
          "pod-template-hash": "6b5c4d3f2g"}
POSTGRES = {"app": "postgres", "controller-revision-hash": "postgres-6d5f9c",
            "statefulset.kubernetes.io/pod-name": "postgres-0"}
DNS = {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"}


def _pod(ns: str, name: str, generate: str | None, labels: dict[str, str],
         ip: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels}
    if generate:
        meta["generateName"] = generate
    return {"kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": ip}}


def inventory() -> Inventory:
    items = [{"kind": "Namespace", "metadata": {"name": n, "labels": {"team": n}}}
             for n in ("shop", "db", "kube-system")]
    items += [
        _pod("shop", "web-5d8f7c9b6d-aaaaa", "web-5d8f7c9b6d-", WEB, "10.244.0.10"),
        _pod("shop", "web-5d8f7c9b6d-bbbbb", "web-5d8f7c9b6d-", WEB, "10.244.0.11"),
        _pod("shop", "api-7c9d8b6f5c-ccccc", "api-7c9d8b6f5c-", API, "10.244.0.12"),
        _pod("shop", "api-canary-6b5c4d3f2g-ddddd", "api-canary-6b5c4d3f2g-", CANARY,
             "10.244.0.13"),
        _pod("db", "postgres-0", "postgres-", POSTGRES, "10.244.1.20"),
        _pod("kube-system", "coredns-5d78c9869d-eeeee", "coredns-5d78c9869d-", DNS,
             "10.244.2.2"),
    ]
    return Inventory.from_objects(items)


def side(kind: str, ns: str, aggr: str, labels: dict[str, str] | None = None,
         ip: str | None = None) -> dict[str, Any]:
    return {"type": kind, "namespace": ns, "name_aggr": aggr, "labels": labels, "ip": ip}


def wep(ns: str, aggr: str, labels: dict[str, str]) -> dict[str, Any]:
    return side("wep", ns, aggr, labels)


PUB = side("net", "-", "pub")
PVT = side("net", "-", "pvt")
WEB_EP = wep("shop", "web-5d8f7c9b6d-*", WEB)
API_EP = wep("shop", "api-7c9d8b6f5c-*", API)
PG_EP = wep("db", "postgres-*", POSTGRES)


def flow(src: dict[str, Any], dst: dict[str, Any], port: int | None, proto: str = "tcp", *,
         reporter: str = "src", domains: list[str] | None = None, flows: int = 1,
         service: tuple[str, str] | None = None, minutes: int = 0,
         trace: str | None = None, action: str = "allow") -> dict[str, Any]:
    local = src if reporter.startswith("src") else dst
    hit = trace or f"0|__PROFILE__|__PROFILE__.kns.{local['namespace']}|allow|0"
    row: dict[str, Any] = {
        "start_time": T0 + timedelta(minutes=minutes),
        "end_time": T0 + timedelta(minutes=minutes + 5),
        "dest_port": port, "proto": proto, "action": action, "reporter": reporter,
        "dest_domains": domains,
        "dest_service_namespace": service[0] if service else "-",
        "dest_service_name": service[1] if service else "-",
        "enforced_policies": [hit], "pending_policies": [hit],
        "bytes_in": 100 * flows, "bytes_out": 50 * flows, "packets_in": 2 * flows,
        "packets_out": 2 * flows, "num_flows": flows, "num_flows_started": flows,
        "num_flows_completed": flows, "host": "node-1", "collector": "test",
    }
    for prefix, s in (("source", src), ("dest", dst)):
        row.update({f"{prefix}_{k}": v for k, v in s.items() if k != "labels"})
        row[f"{prefix}_name"] = "-"
        row[f"{prefix}_labels"] = sorted(s["labels"].items()) if s["labels"] else None
    return row


def both(src: dict[str, Any], dst: dict[str, Any], port: int | None, proto: str = "tcp",
         **kw: Any) -> list[dict[str, Any]]:
    """The source's and the destination's record of the same traffic."""
    return [flow(src, dst, port, proto, **kw), flow(src, dst, port, proto, reporter="dst",
                                                    **kw)]


def shop_rows() -> list[dict[str, Any]]:
    rows = []
    for port in (8080, 8081, 8082, 9000):  # a run of three, and one apart
        rows += both(WEB_EP, API_EP, port, flows=2)
    rows += both(WEB_EP, PG_EP, 5432, flows=3)  # another namespace
    stripe = side("net", "-", "pub", ip="203.0.113.7")  # an unaggregated record has the IP
    rows.append(flow(WEB_EP, stripe, 443, domains=["api.stripe.com"], flows=4))
    rows.append(flow(WEB_EP, PUB, 443, domains=["b.s3.example.com", "a.s3.example.com"]))
    rows.append(flow(WEB_EP, side("ns", "-", "corp-nets"), 22))  # GlobalNetworkSet
    rows.append(flow(API_EP, side("ns", "shop", "partners"), 443))  # NetworkSet
    rows.append(flow(API_EP, PVT, 5000))  # aggregated: no IP
    rows.append(flow(PVT, API_EP, 8443, reporter="dst"))
    rows.append(flow(API_EP, PUB, None, "icmp"))
    rows.append(flow(API_EP, PUB, 443, service=("shop", "payments")))
    for run in ("28712345", "28712405"):  # two runs of one CronJob
        job = {"app": "backup", "job-name": f"backup-{run}", "controller-uid": run}
        rows.append(flow(wep("shop", f"backup-{run}-*", job), PUB, 443))
    # Not learnt: decided by a policy, denied, outside the window.
    rows += both(WEB_EP, API_EP, 7000, trace="0|default|shop/default.existing|allow|0")
    rows.append(flow(WEB_EP, PUB, 25, action="deny",
                     trace="0|default|shop/default.existing|deny|-1"))
    rows.append(flow(WEB_EP, PUB, 6667, minutes=600))
    return rows


def write_store(path: Path, rows: list[dict[str, Any]]) -> Path:
    with Store(path).writer() as w:
        w.add_flows(pa.Table.from_pylist(rows, schema=FLOWS))
        w.commit()
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("shop") / "store", shop_rows())


def run(store: Path, **kw: Any) -> Recommendation:
    kw.setdefault("namespace", "shop")
    inv = kw.pop("inventory", inventory())
    return recommend(partial(query, connect(store)),
                     PolicySet.from_documents(load_text(POLICIES)), inv,
                     Request(window=WINDOW, **kw))


def policy_of(rec: Recommendation, name: str) -> dict[str, Any]:
    [doc] = [yaml.safe_load(o.text) for o in rec.outputs if o.name == name]
    return doc  # type: ignore[no-any-return]


def rules_of(rec: Recommendation, workload: str) -> list[Rule]:
    [p] = [p for p in rec.policies if p.target.name == workload]
    return list(p.rules)


def egress_to(rec: Recommendation, workload: str, **peer: Any) -> list[Rule]:
    return [r for r in rules_of(rec, workload) if r.direction == "egress"
            and all(getattr(r.peer, k) == v for k, v in peer.items())]


# -- the categories, at workload granularity --------------------------------------------


def test_same_namespace_peers_by_stable_selector_with_exact_ports(shop: Path) -> None:
    rec = run(shop)
    api = '(app.kubernetes.io/instance == "prod" && app.kubernetes.io/name == "api")'
    [rule] = egress_to(rec, "web", selector=api)
    # 8080-8082 observed: one range; 9000 apart stays a port; no namespaceSelector.
    assert (rule.category, rule.protocol, rule.ports) == (Category.NAMESPACE, "TCP",
                                                         ("8080:8082", 9000))
    assert rule.peer.namespace_selector is None
    ingress = [r for r in rules_of(rec, "api") if r.direction == "ingress"]
    assert ingress[0].peer.selector == 'app == "web"'
    assert ingress[0].ports == ("8080:8082", 9000)


def test_other_namespace_peers_by_namespace_and_stable_selector(shop: Path) -> None:
    [rule] = egress_to(run(shop), "web", selector='app == "postgres"')
    # controller-revision-hash and statefulset.kubernetes.io/pod-name are not stable
    assert rule.peer.namespace_selector == 'projectcalico.org/name == "db"'
    assert rule.ports == (5432,)
    assert sum(o.connections for o in rule.evidence) == 3


def test_network_set_peers_by_name_and_kind(shop: Path) -> None:
    rec = run(shop)
    [corp] = [r for r in rules_of(rec, "web") if r.category is Category.NETWORK_SET]
    assert corp.peer.selector == ('(projectcalico.org/kind == "NetworkSet" && '
                                  'projectcalico.org/name == "corp-nets")')
    assert corp.peer.namespace_selector == "global()"
    [partners] = [r for r in rules_of(rec, "api") if r.category is Category.NETWORK_SET]
    assert partners.peer.namespace_selector == 'projectcalico.org/name == "shop"'
    assert partners.peer.network_set == "shop/partners"


def test_domains_are_exact_names_unless_wildcards_are_asked_for(shop: Path) -> None:
    [exact] = [r for r in rules_of(run(shop), "web") if r.category is Category.DOMAINS]
    assert exact.peer.domains == ("a.s3.example.com", "api.stripe.com", "b.s3.example.com")
    assert exact.ports == (443,)
    [wild] = [r for r in rules_of(run(shop, domain_wildcards=True), "web")
              if r.category is Category.DOMAINS]
    assert wild.peer.domains == ("*.s3.example.com", "api.stripe.com")


def test_private_public_icmp_and_service_peers(shop: Path) -> None:
    rules = rules_of(run(shop), "api")
    cats = [(r.direction, r.category.title, r.protocol, r.ports) for r in rules]
    assert cats == [
        ("ingress", "Namespace", "TCP", ("8080:8082", 9000)),
        ("ingress", "Private", "TCP", (8443,)),
        ("egress", "Service", "TCP", ()),  # Calico takes the service's ports
        ("egress", "NetworkSet", "TCP", (443,)),
        ("egress", "Private", "TCP", (5000,)),
        ("egress", "Public", "ICMP", ()),  # ICMP without ports
    ]
    assert rules[2].peer.service == ("shop", "payments")
    assert rules[4].peer.nets == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def test_rule_order_is_calicos(shop: Path) -> None:
    rec = run(shop)
    for p in rec.policies:
        for rules in (p.ingress, p.egress):
            keys = [r.sort_key() for r in rules]
            assert keys == sorted(keys)
    titles = [r.category.title for r in egress_to(rec, "web")]
    assert titles == ["Domains", "Namespace", "Namespace", "Namespace", "Namespace",
                      "NetworkSet"]


def test_dns_rule_when_the_workload_resolved_names(shop: Path) -> None:
    rec = run(shop)
    dns = [r for r in rules_of(rec, "web") if r.dns]
    # web saw DNS names but no port-53 flow: UDP and TCP 53 to CoreDNS as labelled.
    assert sorted((r.protocol, r.ports) for r in dns) == [("TCP", (53,)), ("UDP", (53,))]
    assert {r.peer.selector for r in dns} == {'k8s-app == "kube-dns"'}
    assert {r.peer.namespace_selector for r in dns} == {'projectcalico.org/name == '
                                                        '"kube-system"'}
    assert not [r for r in rules_of(rec, "api") if r.dns]  # api resolved nothing


def test_dns_rule_follows_the_inventory_labels(shop: Path) -> None:
    dns_pod = _pod("kube-system", "coredns-6d4b-fffff", "coredns-6d4b-",
                   {"app.kubernetes.io/name": "coredns", "pod-template-hash": "6d4b"},
                   "10.244.2.3")
    inv = Inventory.from_objects([dns_pod])
    dns = [r for r in rules_of(run(shop, inventory=inv), "web") if r.dns]
    assert {r.peer.selector for r in dns} == {'app.kubernetes.io/name == "coredns"'}


def test_cronjob_runs_are_one_workload(shop: Path) -> None:
    rec = run(shop)
    [backup] = [p for p in rec.policies if p.target.name == "backup"]
    assert backup.target.workloads == ("backup-*",)
    assert backup.target.selector == 'app == "backup"'  # job-name, controller-uid dropped
    assert sum(o.connections for r in backup.egress for o in r.evidence) == 2


def test_only_allowed_flows_no_policy_decided_in_the_window(shop: Path) -> None:
    rec = run(shop)
    ports = {o.port for p in rec.policies for r in p.rules for o in r.evidence}
    assert not ports & {7000, 25, 6667}  # governed, denied, outside the window


def test_workload_prefix_limits_the_recommendation(shop: Path) -> None:
    rec = run(shop, workload="web")
    assert [p.target.name for p in rec.policies] == ["web"]
    assert rec.proof.passed and rec.proof.records == 8


# -- the proof -------------------------------------------------------------------------


def test_replay_keeps_every_observed_flow_allowed(shop: Path) -> None:
    proof = run(shop).proof
    assert proof.passed
    assert (proof.records, proof.allowed_records) == (19, 19)
    assert proof.connections == proof.allowed_connections == 32
    # the two pvt records carry no IP: proved for an address of every RFC 1918 block
    assert proof.representative == 2


def test_a_broken_recommendation_fails_with_the_flows_and_the_deciding_hit(
        shop: Path) -> None:
    rec = run(shop)
    docs = []
    for o in rec.outputs:
        doc = yaml.safe_load(o.text)
        if o.name == "default.web":  # forget the database
            doc["spec"]["egress"] = [r for r in doc["spec"]["egress"]
                                     if "postgres" not in str(r)]
        docs += load_text(yaml.safe_dump(doc))
    existing = PolicySet.from_documents(load_text(POLICIES))
    store = partial(query, connect(shop))
    proof = replay(records(store, WINDOW, "shop"), enforced_set(existing, docs), inventory())
    assert not proof.passed
    [failure] = proof.failures
    assert str(failure) == ("egress shop/web-5d8f7c9b6d-* -> db/postgres-* tcp:5432: deny "
                            "by 0|default|shop/default.web|deny|-1 "
                            "(3 connection(s) in 1 record(s))")
    assert proof.allowed_connections == 32 - 3


def test_existing_policies_in_front_are_replayed(shop: Path) -> None:
    security = POLICIES + """
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.no-ssh}
spec:
  tier: security
  selector: all()
  types: [Egress]
  egress:
  - {action: Deny, protocol: TCP, destination: {ports: [22]}}
  - {action: Pass}
"""
    rec = recommend(partial(query, connect(shop)), PolicySet.from_documents(load_text(security)),
                    inventory(), Request("shop", window=WINDOW))
    [failure] = rec.proof.failures
    assert (failure.peer, failure.port, failure.action) == ("corp-nets", 22, "deny")
    assert failure.deciding == "0|security|security.no-ssh|deny|0"


def test_transit_reporters_count_at_their_reporting_end(tmp_path: Path) -> None:
    rows = [flow(WEB_EP, API_EP, 8080, reporter="src,fwd"),
            flow(WEB_EP, API_EP, 8080, reporter="dst,fwd")]
    rec = run(write_store(tmp_path / "transit", rows))
    assert [(r.direction, r.peer.selector) for p in rec.policies for r in p.rules] == [
        ("ingress", 'app == "web"'),
        ("egress", '(app.kubernetes.io/instance == "prod" && app.kubernetes.io/name == "api")')]
    assert rec.proof.passed and rec.proof.records == 2


def test_nothing_to_recommend(tmp_path: Path) -> None:
    rows = [flow(WEB_EP, API_EP, 8080, trace="0|default|shop/default.existing|allow|0")]
    rec = run(write_store(tmp_path / "governed", rows))
    assert (rec.policies, rec.outputs, rec.proof.records) == ((), (), 0)
