"""The values recommendation works with: what was observed, the rules made from it, and the
policies those rules form. Immutable, normalised at construction, deterministically ordered,
so the YAML and reports built from them are byte-stable.

Exceptions::

    RecommendError (ValueError)   a request recommendation cannot serve (bad option values,
                                  a tier name Calico would refuse)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from recommend.ports import port_sort_key, protocol_sort_key

__all__ = [
    "Category",
    "Observation",
    "PeerMatch",
    "PeerRef",
    "RecommendError",
    "Rule",
    "Target",
    "WorkloadPolicy",
]

Labels = tuple[tuple[str, str], ...]


class RecommendError(ValueError):
    """A recommendation request that cannot be served; the message says what is accepted."""


class Category(IntEnum):
    """Calico's rule categories, in its rule order (reference/calico.md §7.3 step 4)."""

    DOMAINS = 0
    SERVICE = 1
    NAMESPACE = 2  # workload peers: by namespace (namespace scope) or labels (workload scope)
    NETWORK_SET = 3
    PRIVATE = 4
    PUBLIC = 5

    @property
    def title(self) -> str:
        return {0: "Domains", 1: "Service", 2: "Namespace", 3: "NetworkSet", 4: "Private",
                5: "Public"}[self.value]


@dataclass(frozen=True, slots=True, order=True)
class PeerRef:
    """The remote end of observed traffic, as the flow log names it (§1.3)."""

    type: str  # wep | hep | ns | net
    namespace: str  # "-" when not namespaced
    name_aggr: str  # replica-set prefix, set name, pvt or pub

    def __str__(self) -> str:
        if self.type == "net":
            return self.name_aggr
        return self.name_aggr if self.namespace == "-" else f"{self.namespace}/{self.name_aggr}"


@dataclass(frozen=True, slots=True)
class Observation:
    """Allowed traffic no policy decided, between one workload and one peer, on one port
    and protocol (and one set of destination domains and service), within the window."""

    direction: str  # ingress | egress
    namespace: str
    workload: str  # the local end's name_aggr (CronJob runs merged: see observe.workload_key)
    peer: PeerRef
    proto: str  # flow-log proto: tcp, udp, icmp, sctp or a number
    port: int | None
    domains: tuple[str, ...] = ()
    service: tuple[str, str] | None = None  # (namespace, name) of the ClusterIP used
    local_labels: tuple[Labels, ...] = ()  # distinct label sets seen on the local end
    peer_labels: tuple[Labels, ...] = ()
    peer_ips: tuple[str, ...] = ()
    connections: int = 0
    bytes: int = 0
    packets: int = 0
    records: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def sort_key(self) -> tuple[object, ...]:
        return (self.namespace, self.workload, self.direction, self.peer, self.proto,
                -1 if self.port is None else self.port, self.domains, self.service or ("", ""))


@dataclass(frozen=True, slots=True)
class PeerMatch:
    """What a rule says about the remote end. ``selector`` and ``namespace_selector`` are
    canonical Calico selector text; ``labels``/``namespace`` are the equalities behind them
    (for formats without Calico selectors)."""

    selector: str | None = None
    namespace_selector: str | None = None
    nets: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    service: tuple[str, str] | None = None  # (namespace, name)
    labels: Labels = ()
    namespace: str | None = None  # the peer's namespace when the rule names one
    network_set: str | None = None  # "ns/name" or "name" (global) for set peers

    def sort_key(self) -> tuple[object, ...]:
        """Names order: selector text, then namespace, nets, domains, service."""
        return (self.selector or "", self.namespace_selector or "", self.nets, self.domains,
                self.service or ("", ""), self.network_set or "")

    def describe(self) -> str:
        parts = []
        if self.namespace_selector:
            parts.append(f"namespaceSelector {self.namespace_selector}")
        if self.selector:
            parts.append(f"selector {self.selector}")
        if self.nets:
            parts.append("nets " + ", ".join(self.nets))
        if self.domains:
            parts.append("domains " + ", ".join(self.domains))
        if self.service:
            parts.append(f"service {self.service[0]}/{self.service[1]}")
        return "; ".join(parts) or "any peer"


@dataclass(frozen=True, slots=True)
class Rule:
    """One recommended Allow rule with the observations behind it."""

    direction: str
    category: Category
    protocol: str | int  # Calico spelling: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255
    ports: tuple[int | str, ...]  # ints and "first:last" ranges, on destination.ports
    peer: PeerMatch
    evidence: tuple[Observation, ...] = field(default=(), compare=False)
    dns: bool = False  # added so that the workload keeps resolving names

    def sort_key(self) -> tuple[object, ...]:
        return (self.category, protocol_sort_key(self.protocol), port_sort_key(self.ports),
                self.peer.sort_key())


@dataclass(frozen=True, slots=True)
class Target:
    """What one recommended policy applies to."""

    scope: str  # workload | namespace
    namespace: str
    name: str  # the policy name without the tier: "frontend", or the namespace
    selector: str  # canonical Calico selector
    labels: Labels  # the equalities behind ``selector`` (empty: the whole namespace)
    workloads: tuple[str, ...]  # the name_aggr values it covers


@dataclass(frozen=True, slots=True)
class WorkloadPolicy:
    """A recommendation for one target: rules in Calico's order, and what to tell the user."""

    target: Target
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    warnings: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.ingress + self.egress
