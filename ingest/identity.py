"""Who an IP address was: endpoint typing exactly as Calico's flow logs type it.

``reference/calico.md`` §1.3: an IP of a pod is ``wep`` (``name_aggr`` = ``generateName`` +
``*``, a bare pod keeps its name); otherwise an IP inside a NetworkSet or GlobalNetworkSet is
``ns`` (the set's name and namespace); otherwise ``net`` with ``name_aggr`` ``pvt`` for the
RFC 1918 ranges and ``pub`` for the rest. A Service ClusterIP fills ``dest_service_*``.

When an IP lies in several network sets, Calico (``GetLongestPrefixCidrWithNamespaceIsolation``)
prefers sets in the namespace of the flow's local workload, then GlobalNetworkSets, then sets of
other namespaces; within a group the longest prefix wins, then the smallest identity.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.inventory import Inventory
from policy.domains import DomainPattern
from policy.endpoints import Endpoint, IpAddress
from policy.model import NetworkSet

__all__ = ["EndpointInfo", "Resolver", "ServiceInfo", "aggregate_name", "net_info"]

_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                    "192.168.0.0/16"))


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One side of a flow record: ``type``, ``name``, ``name_aggr``, ``namespace``, labels."""

    type: str
    name: str
    name_aggr: str
    namespace: str
    labels: tuple[tuple[str, str], ...] | None = None
    identity: str | None = None  # the pod's namespace/name, for the evaluator's look-ups


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """``dest_service_*`` of a flow whose pre-DNAT destination was a ClusterIP."""

    namespace: str
    name: str
    port_name: str  # "-" for an unnamed port, "*" when several names share the number
    port: int


# Pod names controllers generate, for pods listed without generateName: a ReplicaSet's pod is
# <deployment>-<template hash>-<5 random>, a StatefulSet's <set>-<ordinal>, a DaemonSet's or
# Job's <owner>-<5 random>. (Kubernetes' random suffixes use this alphabet: no vowels, no 0/1/3.)
_SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]{5}"
_SHAPES = {
    "ReplicaSet": re.compile(rf"^(.+)-{_SUFFIX}$"),
    "DaemonSet": re.compile(rf"^(.+)-{_SUFFIX}$"),
    "Job": re.compile(rf"^(.+)-{_SUFFIX}$"),
    "StatefulSet": re.compile(r"^(.+)-\d+$"),
}


def aggregate_name(name: str, generate_name: str | None, owner_kind: str | None) -> str:
    """A pod's ``name_aggr``: ``generateName*``; without one, the prefix its controller's
    naming implies (``frontend-864f4fcdfd-x7k2p`` owned by a ReplicaSet gives
    ``frontend-864f4fcdfd-*``); a bare pod keeps its own name."""
    if generate_name:
        return f"{generate_name}*"
    shape = _SHAPES.get(owner_kind or "")
    match = shape.match(name) if shape else None
    return f"{match.group(1)}-*" if match else name


def net_info(ip: IpAddress) -> EndpointInfo:
    """The ``net`` typing of an address no endpoint or network set claims."""
    private = ip.version == 4 and any(ip in n for n in _PRIVATE)
    return EndpointInfo("net", "-", "pvt" if private else "pub", "-")


class _SetIndex:
    """Network-set CIDRs by (version, prefix length, network address): a longest-prefix look-up
    is at most 33 (IPv4) or 129 (IPv6) dictionary probes, whatever the number of sets."""

    def __init__(self, sets: Iterable[NetworkSet]) -> None:
        self.by_prefix: dict[tuple[int, int], dict[int, list[NetworkSet]]] = {}
        for s in sets:
            for net in s.nets:
                key = (net.version, net.prefixlen)
                self.by_prefix.setdefault(key, {}).setdefault(int(net.network_address),
                                                              []).append(s)
        self.lengths = {v: sorted({p for (ver, p) in self.by_prefix if ver == v}, reverse=True)
                        for v in (4, 6)}

    def containing(self, ip: IpAddress) -> list[tuple[int, NetworkSet]]:
        """Every set with a CIDR containing ``ip``, with that CIDR's prefix length."""
        bits = 32 if ip.version == 4 else 128
        value = int(ip)
        out: list[tuple[int, NetworkSet]] = []
        for plen in self.lengths[ip.version]:
            masked = value >> (bits - plen) << (bits - plen) if plen else 0
            out.extend((plen, s) for s in self.by_prefix[(ip.version, plen)].get(masked, ()))
        return out


def _group(s: NetworkSet, preferred_namespace: str | None) -> int:
    """Calico's namespace isolation: the local workload's namespace, global, the rest."""
    if s.namespace is not None and s.namespace == preferred_namespace:
        return 0
    return 1 if s.namespace is None else 2


class Resolver:
    """Types IPs as Calico would, from an inventory (optional) and network sets (optional)."""

    def __init__(self, inventory: Inventory | None = None,
                 network_sets: Sequence[NetworkSet] = ()) -> None:
        self.inventory = inventory
        self._sets = _SetIndex(network_sets)
        self._has_sets = bool(network_sets)
        self._domain_sets = [(s, tuple(DomainPattern(d) for d in s.allowed_egress_domains))
                             for s in network_sets if s.allowed_egress_domains]

    def workload(self, ip: IpAddress, when: float) -> Endpoint | None:
        return self.inventory.endpoint_at(ip, when) if self.inventory else None

    def time_dependent(self, ip: IpAddress) -> bool:
        """Whether several pods held ``ip`` (so the answer depends on the time)."""
        inv = self.inventory
        return inv is not None and len(inv.endpoints_with_ip(ip)) > 1

    def describe_workload(self, ep: Endpoint) -> EndpointInfo:
        owner = self.inventory.owners.get(ep.identity) if self.inventory else None
        aggr = aggregate_name(ep.name, ep.generate_name, owner[0] if owner else None)
        return EndpointInfo("wep", ep.name, aggr, ep.namespace, ep.labels, ep.identity)

    def network_set(self, ip: IpAddress, preferred_namespace: str | None) -> NetworkSet | None:
        if not self._has_sets:
            return None
        found = self._sets.containing(ip)
        if not found:
            return None

        def rank(item: tuple[int, NetworkSet]) -> tuple[int, int, str]:
            plen, s = item
            return _group(s, preferred_namespace), -plen, s.identity

        return min(found, key=rank)[1]

    def domain_set(self, domains: Sequence[str],
                   preferred_namespace: str | None) -> NetworkSet | None:
        """The set whose ``allowedEgressDomains`` match one of ``domains`` (Calico's
        wildcards), by the same namespace priority as CIDRs, then the smallest identity."""
        if not domains or not self._domain_sets:
            return None
        found = [s for s, patterns in self._domain_sets
                 if any(p.matches(d) for p in patterns for d in domains)]
        if not found:
            return None
        return min(found, key=lambda s: (_group(s, preferred_namespace), s.identity))

    def describe(self, ip: IpAddress, when: float,
                 preferred_namespace: str | None = None) -> EndpointInfo:
        """``ip`` at Unix time ``when``; ``preferred_namespace`` is the namespace of the flow's
        local workload, which decides between overlapping network sets."""
        ep = self.workload(ip, when)
        if ep is not None:
            return self.describe_workload(ep)
        return self.describe_external(ip, preferred_namespace)

    def describe_external(self, ip: IpAddress, preferred_namespace: str | None,
                          domains: Sequence[str] = ()) -> EndpointInfo:
        """A non-workload IP: the network set containing it (by CIDR, else by one of the
        ``domains`` it was resolved from matching the set's ``allowedEgressDomains``), or
        ``net``."""
        s = self.network_set(ip, preferred_namespace) or self.domain_set(
            domains, preferred_namespace)
        if s is not None:
            return EndpointInfo("ns", s.name, s.name, s.namespace or "-", s.labels)
        return net_info(ip)

    def service(self, ip: IpAddress, port: int | None, protocol: int) -> ServiceInfo | None:
        """The Service whose ClusterIP and port ``ip:port`` is (``dest_service_port`` is the
        port's name, ``*`` when several port names share the number, as Calico writes it)."""
        if self.inventory is None:
            return None
        for svc in self.inventory.services_for_ip(ip):
            names = sorted({sp.name for sp in svc.ports
                            if sp.port == port and sp.protocol == protocol})
            if names:
                name = names[0] if len(names) == 1 else "*"
                return ServiceInfo(svc.namespace, svc.name, name or "-", int(port or 0))
        return None
