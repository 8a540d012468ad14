"""What the evaluator knows about the two ends of a flow.

An :class:`Endpoint` is a Calico workload endpoint (a pod): policies apply to it. A
:class:`Peer` is one end of a flow: maybe an endpoint, maybe only an IP (external host, node,
network-set member), with what is known of it (port, DNS names, services).

Selectors see an endpoint's labels plus the labels Calico adds (``reference/calico.md`` §4)::

    projectcalico.org/namespace, projectcalico.org/orchestrator,
    projectcalico.org/serviceaccount, pcns.<namespace label>, pcns.projectcalico.org/name,
    pcsa.<sa label>, pcsa.projectcalico.org/name
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["Endpoint", "IpAddress", "LabelSet", "NamedPortDef", "Peer"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMESPACE = "projectcalico.org/namespace"
ORCHESTRATOR = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
NAME = "projectcalico.org/name"
KIND = "projectcalico.org/kind"


class LabelSet(Mapping[str, str]):
    """An immutable, hashable label mapping (hash computed once), used as a cache key."""

    __slots__ = ("_d", "_hash")

    def __init__(self, items: Mapping[str, str] | tuple[tuple[str, str], ...] = ()) -> None:
        self._d: dict[str, str] = dict(items)
        self._hash = hash(frozenset(self._d.items()))

    def __getitem__(self, key: str) -> str:
        return self._d[key]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._d.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelSet):
            return self._hash == other._hash and self._d == other._d
        return isinstance(other, Mapping) and self._d == dict(other)

    def __repr__(self) -> str:
        return f"LabelSet({dict(sorted(self._d.items()))!r})"


@dataclass(frozen=True, slots=True, order=True)
class NamedPortDef:
    """A container port with a name: ``(name, protocol number, port)``."""

    name: str
    protocol: int
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A pod as Calico's policy sees it."""

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str | None = "default"
    namespace_labels: tuple[tuple[str, str], ...] = ()
    service_account_labels: tuple[tuple[str, str], ...] = ()
    named_ports: tuple[NamedPortDef, ...] = ()
    ips: tuple[IpAddress, ...] = ()
    generate_name: str | None = None
    _selector_labels: LabelSet | None = field(default=None, init=False, compare=False,
                                              repr=False)
    _hash: int | None = field(default=None, init=False, compare=False, repr=False)

    def __hash__(self) -> int:
        # Endpoints key the evaluator's caches; hash the identity and labels only (equal
        # endpoints still hash equal), once, so that a lookup does not walk every field.
        if self._hash is None:
            object.__setattr__(self, "_hash", hash((self.namespace, self.name, self.labels)))
        assert self._hash is not None
        return self._hash

    @property
    def selector_labels(self) -> LabelSet:
        """Labels with Calico's additions; what every selector is evaluated against."""
        if self._selector_labels is None:
            object.__setattr__(self, "_selector_labels", LabelSet(self._build_labels()))
        assert self._selector_labels is not None
        return self._selector_labels

    def _build_labels(self) -> dict[str, str]:
        out = {f"pcns.{k}": v for k, v in self.namespace_labels}
        out[f"pcns.{NAME}"] = self.namespace
        if self.service_account:
            out.update({f"pcsa.{k}": v for k, v in self.service_account_labels})
            out[f"pcsa.{NAME}"] = self.service_account
            out[SERVICE_ACCOUNT] = self.service_account
        out[NAMESPACE] = self.namespace
        out[ORCHESTRATOR] = "k8s"
        out.update(dict(self.labels))  # the endpoint's own labels win
        return out

    @property
    def identity(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: int) -> int | None:
        for p in self.named_ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a flow.

    ``ip``/``port`` are ``None`` when unknown (aggregated flow logs); rules that depend on
    them then give an *uncertain* verdict rather than a guess. ``domains`` are the DNS names
    known for the destination IP; ``services`` the ``(namespace, name)`` of services the
    peer was reached through or backs.
    """

    endpoint: Endpoint | None = None
    ip: IpAddress | None = None
    port: int | None = None
    domains: frozenset[str] = frozenset()
    services: frozenset[tuple[str, str]] = frozenset()
    # Set when the network sets containing the peer are known only by name (flow logs).
    network_set_names: tuple[str, ...] | None = None

    @property
    def is_endpoint(self) -> bool:
        return self.endpoint is not None
