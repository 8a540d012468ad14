"""The policy model: immutable, normalised values for tiers, policies, rules and network sets.

These are what the loader produces from ``projectcalico.org/v3`` and ``networking.k8s.io/v1``
documents, and what the compiler and evaluator consume. They hold the policy *as written*
(selectors unscoped); scoping to namespaces happens when a set of policies is compiled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from policy.selector import Selector, parse_selector

__all__ = [
    "ALL",
    "DEFAULT_TIER",
    "DEFAULT_TIER_ORDER",
    "KNP_ORDER",
    "Action",
    "Direction",
    "EntityRule",
    "IcmpMatch",
    "IpNet",
    "NamedPort",
    "NetworkSet",
    "Origin",
    "Policy",
    "PolicyKind",
    "PortRange",
    "Rule",
    "ServiceMatch",
    "StagedAction",
    "Tier",
]

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL: Selector = parse_selector("all()")
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
KNP_ORDER = 1000.0  # Kubernetes NetworkPolicies sit in the default tier at order 1000


class Action(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"
    LOG = "Log"


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class StagedAction(StrEnum):
    SET = "Set"
    DELETE = "Delete"
    LEARN = "Learn"
    IGNORE = "Ignore"


class PolicyKind(StrEnum):
    """Kinds as they appear in ``kind:``; Kubernetes' NetworkPolicy gets its own name."""

    NETWORK_POLICY = "NetworkPolicy"
    GLOBAL_NETWORK_POLICY = "GlobalNetworkPolicy"
    STAGED_NETWORK_POLICY = "StagedNetworkPolicy"
    STAGED_GLOBAL_NETWORK_POLICY = "StagedGlobalNetworkPolicy"
    STAGED_KUBERNETES_NETWORK_POLICY = "StagedKubernetesNetworkPolicy"
    KUBERNETES_NETWORK_POLICY = "KubernetesNetworkPolicy"

    @property
    def staged(self) -> bool:
        return self.name.startswith("STAGED_")

    @property
    def namespaced(self) -> bool:
        return "GLOBAL" not in self.name

    @property
    def kubernetes(self) -> bool:
        return "KUBERNETES" in self.name

    @property
    def enforced(self) -> PolicyKind:
        """The kind a staged policy becomes when it is promoted (itself when not staged)."""
        return _ENFORCED_KIND.get(self, self)

    @property
    def staged_kind(self) -> PolicyKind:
        """The staged kind this enforced kind is staged as (itself when already staged)."""
        return _STAGED_KIND.get(self, self)


_ENFORCED_KIND = {
    PolicyKind.STAGED_NETWORK_POLICY: PolicyKind.NETWORK_POLICY,
    PolicyKind.STAGED_GLOBAL_NETWORK_POLICY: PolicyKind.GLOBAL_NETWORK_POLICY,
    PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY: PolicyKind.KUBERNETES_NETWORK_POLICY,
}
_STAGED_KIND = {v: k for k, v in _ENFORCED_KIND.items()}


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    """Where a document came from: file (or ``<string>``) and 0-based document index."""

    source: str = "<string>"
    index: int = 0

    def __str__(self) -> str:
        return f"{self.source} doc {self.index}"


@dataclass(frozen=True, slots=True, order=True)
class PortRange:
    """An inclusive port range; a single port is ``PortRange(p, p)``."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True, slots=True, order=True)
class NamedPort:
    """A port by name, resolved on the endpoint the port belongs to."""

    name: str

    def __str__(self) -> str:
        return self.name


Port = PortRange | NamedPort


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    type: int | None = None
    code: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceMatch:
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class EntityRule:
    """A rule's ``source`` or ``destination``: every criterion is ANDed; empty means any."""

    nets: tuple[IpNet, ...] = ()
    not_nets: tuple[IpNet, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ports: tuple[Port, ...] = ()
    not_ports: tuple[Port, ...] = ()
    service_account_names: tuple[str, ...] = ()
    service_account_selector: Selector | None = None
    services: ServiceMatch | None = None
    domains: tuple[str, ...] = ()

    @property
    def has_service_accounts(self) -> bool:
        return bool(self.service_account_names) or self.service_account_selector is not None

    @property
    def is_empty(self) -> bool:
        return self == _EMPTY_ENTITY


_EMPTY_ENTITY = EntityRule()


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    ip_version: int | None = None
    source: EntityRule = _EMPTY_ENTITY
    destination: EntityRule = _EMPTY_ENTITY
    # ALP/HTTP match and annotations are kept for round trips; L3 evaluation ignores HTTP
    # criteria the way a flow log without L7 data must.
    http: tuple[tuple[str, object], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    order: float | None
    default_action: Action = Action.DENY
    origin: Origin = field(default=Origin(), compare=False)

    def sort_key(self) -> tuple[bool, float, str]:
        # A tier without an order sorts after every ordered tier; ties by name.
        return (self.order is None, self.order or 0.0, self.name)


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy of any kind, normalised.

    ``name`` is the object's ``metadata.name`` (for Kubernetes kinds, the Kubernetes name).
    ``selector`` is the policy's own selector, not yet scoped to its namespace.
    """

    kind: PolicyKind
    name: str
    namespace: str | None
    tier: str
    order: float | None
    selector: Selector
    types: tuple[Direction, ...]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    namespace_selector: Selector | None = None
    service_account_selector: Selector | None = None
    staged_action: StagedAction | None = None
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    origin: Origin = field(default=Origin(), compare=False)

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    @property
    def staged(self) -> bool:
        return self.kind.staged

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the object: (kind, namespace, name)."""
        return (self.kind.value, self.namespace or "", self.name)

    @property
    def enforced_key(self) -> tuple[str, str, str]:
        """Identity of the enforced object this one stands for (itself when enforced)."""
        return (self.kind.enforced.value, self.namespace or "", self.name)

    @property
    def v1_name(self) -> str:
        """Calico's internal (v1) name: ``tier.name`` / ``knp.default.name``.

        Kubernetes policies are ``knp.default.<name>``; Calico policies keep their v3 name,
        which in a non-default tier already starts with ``<tier>.``.
        """
        if self.kind.kubernetes:
            return f"knp.default.{self.name}"
        if self.name.startswith(f"{self.tier}."):
            return self.name
        return f"{self.tier}.{self.name}"

    def sort_key(self) -> tuple[bool, float, str]:
        # Within a tier: order ascending, no order last, ties by name (EE: the v1 name,
        # "<namespace>/<tier>.<name>" for namespaced policies).
        ns = f"{self.namespace}/" if self.kind.namespaced and self.namespace else ""
        return (self.order is None, self.order or 0.0, ns + self.v1_name)


@dataclass(frozen=True, slots=True)
class NetworkSet:
    """A NetworkSet (namespaced) or GlobalNetworkSet (``namespace is None``)."""

    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IpNet, ...]
    allowed_egress_domains: tuple[str, ...] = ()
    origin: Origin = field(default=Origin(), compare=False)

    @property
    def kind(self) -> str:
        return "GlobalNetworkSet" if self.namespace is None else "NetworkSet"

    @property
    def identity(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"
