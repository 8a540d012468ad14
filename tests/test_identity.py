"""Endpoint typing as Calico's flow logs type it (``reference/calico.md`` §1.2, §1.3).

Truth tables: ``name_aggr`` of pods (``generateName*``, the controller's naming without one,
a bare pod keeps its name), ``pvt``/``pub`` on every RFC 1918 boundary, the network-set
choice when an IP lies in several sets, service port names, and which pod held a reused IP.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime

import pytest

from ingest.identity import EndpointInfo, Resolver, ServiceInfo, aggregate_name, net_info
from ingest.inventory import Inventory
from policy.model import NetworkSet


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def listing(*items: object) -> str:
    """What ``kubectl get ... -A -o json`` prints."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


# -- name_aggr -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "generate_name", "owner_kind", "expected"),
    [
        # generateName wins, whatever the owner.
        ("frontend-864f4fcdfd-x7k2p", "frontend-864f4fcdfd-", "ReplicaSet",
         "frontend-864f4fcdfd-*"),
        ("frontend-864f4fcdfd-x7k2p", "frontend-864f4fcdfd-", None, "frontend-864f4fcdfd-*"),
        ("db-0", "db-", "StatefulSet", "db-*"),
        ("kube-proxy-7qvrm", "kube-proxy-", "DaemonSet", "kube-proxy-*"),
        # A bare pod (no generateName, no controller) keeps its own name.
        ("nginx", None, None, "nginx"),
        ("db-0", None, None, "db-0"),
        ("web-x7k2p", None, None, "web-x7k2p"),
        ("web-x7k2p", "", None, "web-x7k2p"),
        # Without generateName: the prefix the controller's naming implies.
        ("frontend-864f4fcdfd-x7k2p", None, "ReplicaSet", "frontend-864f4fcdfd-*"),
        ("db-0", None, "StatefulSet", "db-*"),
        ("db-12", None, "StatefulSet", "db-*"),
        ("web-v2-3", None, "StatefulSet", "web-v2-*"),
        ("fluentd-x7k2p", None, "DaemonSet", "fluentd-*"),
        ("backup-28391234-x7k2p", None, "Job", "backup-28391234-*"),
        # Names not of the controller's shape keep their name.
        ("frontend", None, "ReplicaSet", "frontend"),
        ("frontend-864f4fcdfd-abcde", None, "ReplicaSet", "frontend-864f4fcdfd-abcde"),  # vowels
        ("frontend-864f4fcdfd-x7k2", None, "ReplicaSet", "frontend-864f4fcdfd-x7k2"),  # 4 chars
        ("frontend-864f4fcdfd-x7k2pq", None, "ReplicaSet", "frontend-864f4fcdfd-x7k2pq"),
        ("fluentd-X7K2P", None, "DaemonSet", "fluentd-X7K2P"),
        ("db-x", None, "StatefulSet", "db-x"),
        ("db0", None, "StatefulSet", "db0"),
        ("backup-x7k2", None, "Job", "backup-x7k2"),
        # Owners whose naming is not known keep the name.
        ("web-x7k2p", None, "ReplicationController", "web-x7k2p"),
        ("web-x7k2p", None, "Node", "web-x7k2p"),
    ],
)
def test_aggregate_name(name: str, generate_name: str | None, owner_kind: str | None,
                        expected: str) -> None:
    assert aggregate_name(name, generate_name, owner_kind) == expected


def test_aggregate_name_comes_from_the_inventory_owner() -> None:
    refs = [{"kind": "StatefulSet", "name": "db", "controller": True}]
    inv = Inventory.from_text(listing(
        {"kind": "Pod", "metadata": {"name": "db-0", "namespace": "shop",
                                     "labels": {"app": "db"}, "ownerReferences": refs},
         "spec": {"containers": []}, "status": {"podIP": "10.1.0.9"}},
        {"kind": "Pod", "metadata": {"name": "solo", "namespace": "shop"},
         "spec": {"containers": []}, "status": {"podIP": "10.1.0.10"}}))
    r = Resolver(inv)
    assert r.describe(ip("10.1.0.9"), 0.0) == EndpointInfo(
        "wep", "db-0", "db-*", "shop", (("app", "db"),), "shop/db-0")
    assert r.describe(ip("10.1.0.10"), 0.0) == EndpointInfo(
        "wep", "solo", "solo", "shop", (), "shop/solo")


# -- net: pvt / pub --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("address", "name_aggr"),
    [
        ("9.255.255.255", "pub"),
        ("10.0.0.0", "pvt"),
        ("10.0.0.1", "pvt"),
        ("10.255.255.255", "pvt"),
        ("11.0.0.0", "pub"),
        ("11.0.0.1", "pub"),
        ("172.15.255.255", "pub"),
        ("172.16.0.0", "pvt"),
        ("172.20.1.2", "pvt"),
        ("172.31.255.255", "pvt"),
        ("172.32.0.0", "pub"),
        ("192.167.255.255", "pub"),
        ("192.168.0.0", "pvt"),
        ("192.168.1.1", "pvt"),
        ("192.168.255.255", "pvt"),
        ("192.169.0.0", "pub"),
        # Only the three RFC 1918 ranges are pvt (§1.3), not other special-purpose space.
        ("100.64.0.1", "pub"),
        ("127.0.0.1", "pub"),
        ("169.254.1.1", "pub"),
        # "pvt if IPv4 in ..., else pub": every IPv6 address is pub, ULA included.
        ("2001:db8::1", "pub"),
        ("fd00::1", "pub"),
        ("fe80::1", "pub"),
    ],
)
def test_net_info(address: str, name_aggr: str) -> None:
    assert net_info(ip(address)) == EndpointInfo("net", "-", name_aggr, "-", None, None)


# -- network sets ----------------------------------------------------------------------------

def netset(name: str, namespace: str | None, *nets: str) -> NetworkSet:
    return NetworkSet(name, namespace, (("set", name),),
                      tuple(ipaddress.ip_network(n) for n in nets))


# Every set contains 10.1.2.3; their prefixes differ.
SETS = (
    netset("g-8", None, "10.0.0.0/8"),
    netset("g-24", None, "10.1.2.0/24"),
    netset("own-16", "shop", "10.1.0.0/16"),
    netset("own-12", "shop", "10.0.0.0/12"),
    netset("far-28", "other", "10.1.2.0/28"),
    netset("far-30", "third", "10.1.2.0/30"),
)


@pytest.mark.parametrize(
    ("sets", "preferred", "expected"),
    [
        # 1. the local workload's namespace first, even against longer global/other prefixes.
        (SETS, "shop", "shop/own-16"),
        ((SETS[0], SETS[3]), "shop", "shop/own-12"),
        # 2. then GlobalNetworkSets, even against longer prefixes in other namespaces.
        (SETS, "elsewhere", "g-24"),
        ((SETS[0], SETS[4]), "elsewhere", "g-8"),
        ((SETS[0], SETS[4]), "other", "other/far-28"),
        # No preferred namespace (a flow between two non-workloads): globals, then the rest.
        (SETS, None, "g-24"),
        ((SETS[0], SETS[2]), None, "g-8"),
        # 3. then other namespaces, longest prefix first.
        ((SETS[2], SETS[4], SETS[5]), "elsewhere", "third/far-30"),
        ((SETS[2], SETS[4], SETS[5]), None, "third/far-30"),
        # Longest prefix within a group.
        ((SETS[2], SETS[3]), "shop", "shop/own-16"),
        ((SETS[0], SETS[1]), "shop", "g-24"),
        # A set with several CIDRs competes with its longest containing one.
        ((netset("multi", "x", "10.0.0.0/8", "10.1.2.0/29"), SETS[4]), None, "x/multi"),
        # Ties: the smallest identity (name, or namespace/name).
        ((netset("b", None, "10.0.0.0/8"), netset("a", None, "10.0.0.0/8")), None, "a"),
        ((netset("a", "z", "10.0.0.0/8"), netset("z", "a", "10.0.0.0/8")), None, "a/z"),
        ((netset("b", "shop", "10.0.0.0/8"), netset("a", "shop", "10.0.0.0/8")), "shop",
         "shop/a"),
    ],
)
def test_network_set_priority(sets: tuple[NetworkSet, ...], preferred: str | None,
                              expected: str) -> None:
    found = Resolver(None, sets).network_set(ip("10.1.2.3"), preferred)
    assert found is not None
    assert found.identity == expected


@pytest.mark.parametrize(
    ("address", "preferred", "expected"),
    [
        ("10.1.2.3", "shop", EndpointInfo("ns", "own-16", "own-16", "shop", (("set", "own-16"),))),
        ("10.1.2.3", None, EndpointInfo("ns", "g-24", "g-24", "-", (("set", "g-24"),))),
        ("10.9.0.1", "other", EndpointInfo("ns", "g-8", "g-8", "-", (("set", "g-8"),))),
        ("11.0.0.1", "shop", EndpointInfo("net", "-", "pub", "-")),
        ("192.168.0.1", None, EndpointInfo("net", "-", "pvt", "-")),
        ("fd00::1", None, EndpointInfo("net", "-", "pub", "-")),
    ],
)
def test_describe_external(address: str, preferred: str | None, expected: EndpointInfo) -> None:
    assert Resolver(None, SETS).describe_external(ip(address), preferred) == expected


def test_network_sets_by_ip_version() -> None:
    r = Resolver(None, (netset("v6", None, "fd00::/8"), netset("all4", None, "0.0.0.0/0")))
    assert r.network_set(ip("fd00::1"), None) == r.network_set(ip("fd12::1"), None)
    assert r.network_set(ip("fd00::1"), None).name == "v6"  # type: ignore[union-attr]
    assert r.network_set(ip("203.0.113.1"), None).name == "all4"  # type: ignore[union-attr]
    assert r.network_set(ip("2001:db8::1"), None) is None


DOMAIN_SETS = (
    NetworkSet("twilio", "shop", (("set", "twilio"),), (), ("*.twilio.com",)),
    NetworkSet("saas", None, (("set", "saas"),), (), ("api.twilio.com", "*.slack.com")),
    NetworkSet("cidr", None, (("set", "cidr"),), (ipaddress.ip_network("203.0.113.0/24"),)),
)


@pytest.mark.parametrize(
    ("address", "preferred", "domains", "expected"),
    [
        ("198.51.100.7", "shop", ("api.twilio.com",), "shop/twilio"),  # own namespace first
        ("198.51.100.7", None, ("api.twilio.com",), "saas"),  # then global
        ("198.51.100.7", "dev", ("API.Twilio.com.",), "saas"),  # names compare like DNS
        ("198.51.100.7", "dev", ("sms.twilio.com",), "shop/twilio"),  # other namespaces last
        ("198.51.100.7", "shop", ("hooks.slack.com",), "saas"),
        ("198.51.100.7", "shop", ("twilio.com",), None),  # "*." needs one more label
        ("203.0.113.9", "shop", ("api.twilio.com",), "cidr"),  # a CIDR match outranks names
        ("198.51.100.7", "shop", (), None),
    ],
)
def test_domain_network_sets(address: str, preferred: str | None, domains: tuple[str, ...],
                             expected: str | None) -> None:
    info = Resolver(None, DOMAIN_SETS).describe_external(ip(address), preferred, domains)
    identity = None if info.type != "ns" else (
        info.name if info.namespace == "-" else f"{info.namespace}/{info.name}")
    assert identity == expected
    if expected is None:
        assert (info.type, info.name_aggr) == ("net", "pub")


# -- services --------------------------------------------------------------------------------

SERVICES = Inventory.from_text(listing(
    {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"clusterIP": "10.96.0.20", "ports": [
         {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
         {"name": "dns", "port": 53, "protocol": "UDP"},
         {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
         {"name": "admin", "port": 9000, "protocol": "TCP"},
         {"name": "admin-alt", "port": 9000, "protocol": "TCP"}]}},
    {"kind": "Service", "metadata": {"name": "solo", "namespace": "shop"},
     "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 443, "targetPort": 8443}]}},
    {"kind": "Service", "metadata": {"name": "dual", "namespace": "edge"},
     "spec": {"clusterIPs": ["10.96.0.22", "fd00::22"], "ports": [{"name": "h", "port": 80}]}},
    {"kind": "Service", "metadata": {"name": "headless", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"name": "h", "port": 80}]}},
))


@pytest.mark.parametrize(
    ("address", "port", "proto", "expected"),
    [
        ("10.96.0.20", 80, 6, ServiceInfo("shop", "web", "http", 80)),
        ("10.96.0.20", 53, 17, ServiceInfo("shop", "web", "dns", 53)),
        ("10.96.0.20", 53, 6, ServiceInfo("shop", "web", "dns-tcp", 53)),
        # Several port names on one number (and protocol): "*".
        ("10.96.0.20", 9000, 6, ServiceInfo("shop", "web", "*", 9000)),
        # An unnamed port: "-".
        ("10.96.0.21", 443, 6, ServiceInfo("shop", "solo", "-", 443)),
        ("10.96.0.22", 80, 6, ServiceInfo("edge", "dual", "h", 80)),
        ("fd00::22", 80, 6, ServiceInfo("edge", "dual", "h", 80)),
        # Wrong protocol, wrong port, no port, not a ClusterIP: no service.
        ("10.96.0.20", 80, 17, None),
        ("10.96.0.21", 443, 17, None),
        ("10.96.0.20", 81, 6, None),
        ("10.96.0.20", None, 1, None),
        ("10.96.0.99", 80, 6, None),
    ],
)
def test_service(address: str, port: int | None, proto: int,
                 expected: ServiceInfo | None) -> None:
    assert Resolver(SERVICES).service(ip(address), port, proto) == expected


def test_no_service_without_an_inventory() -> None:
    assert Resolver(None).service(ip("10.96.0.20"), 80, 6) is None


# -- a reused pod IP -------------------------------------------------------------------------

def _pod(name: str, created: str | None, address: str = "10.1.0.50") -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "namespace": "shop", "labels": {"pod": name}}
    if created is not None:
        meta["creationTimestamp"] = created
    return {"kind": "Pod", "metadata": meta, "spec": {"containers": []},
            "status": {"podIP": address}}


REUSED = Inventory.from_text(listing(
    # Listed newest first: the order of the listing must not matter.
    _pod("new", "2026-11-27T12:00:00Z"),
    _pod("old", "2026-11-27T10:00:00Z"),
    _pod("other", "2026-11-27T11:00:00Z", "10.1.0.51"),
))


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # Before both pods existed: the earliest.
        ("2026-11-27T09:00:00Z", "old"),
        ("2026-11-27T10:00:00Z", "old"),
        ("2026-11-27T11:59:59Z", "old"),
        # Created at or before the time: the later pod.
        ("2026-11-27T12:00:00Z", "new"),
        ("2026-11-28T00:00:00Z", "new"),
    ],
)
def test_endpoint_at_reused_ip(when: str, expected: str) -> None:
    ep = REUSED.endpoint_at(ip("10.1.0.50"), unix(when))
    assert ep is not None
    assert ep.identity == f"shop/{expected}"
    r = Resolver(REUSED)
    assert r.time_dependent(ip("10.1.0.50"))
    assert r.describe(ip("10.1.0.50"), unix(when)) == EndpointInfo(
        "wep", expected, expected, "shop", (("pod", expected),), f"shop/{expected}")


def test_endpoint_at_single_and_unknown_ip() -> None:
    # One pod with the IP: it, at any time (even before its creation).
    ep = REUSED.endpoint_at(ip("10.1.0.51"), unix("2026-01-01T00:00:00Z"))
    assert ep is not None
    assert ep.identity == "shop/other"
    assert not Resolver(REUSED).time_dependent(ip("10.1.0.51"))
    assert REUSED.endpoint_at(ip("10.1.0.52"), 0.0) is None


def test_endpoint_at_pod_without_creation_time_counts_from_the_epoch() -> None:
    inv = Inventory.from_text(listing(_pod("dated", "2026-11-27T12:00:00Z"),
                                      _pod("undated", None)))
    before = inv.endpoint_at(ip("10.1.0.50"), unix("2026-11-27T11:00:00Z"))
    after = inv.endpoint_at(ip("10.1.0.50"), unix("2026-11-27T13:00:00Z"))
    assert before is not None
    assert after is not None
    assert (before.name, after.name) == ("undated", "dated")


def test_endpoint_at_across_merged_snapshots() -> None:
    first = Inventory.from_text(listing(_pod("old", "2026-11-27T10:00:00Z")))
    second = Inventory.from_text(listing(_pod("new", "2026-11-27T12:00:00Z")))
    inv = first.merged(second)
    names = [inv.endpoint_at(ip("10.1.0.50"), unix(t)).name  # type: ignore[union-attr]
             for t in ("2026-11-27T11:00:00Z", "2026-11-27T12:30:00Z")]
    assert names == ["old", "new"]
