"""Recommendations as ``networking.k8s.io/v1`` NetworkPolicy, for clusters without Calico's
API. What Kubernetes cannot say is dropped with a warning, never widened:

* domains → ``ipBlock`` ``/32`` (``/128``) of the addresses the flows went to, when the
  records carry them (unaggregated records); else the rule is left out;
* network sets → ``ipBlock`` of the set's CIDRs, when the set is among the policies given;
* services → the service's pods (its selector, from the inventory);
* ICMP and other port-less protocols: Kubernetes matches only TCP, UDP and SCTP;
* ``Private`` → the three RFC 1918 blocks; ``Public`` → any peer on the ports.

A rule that loses every peer is dropped, because an empty ``to``/``from`` allows everyone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.inventory import Service
from policy import NetworkSet
from recommend.model import Category, Rule, WorkloadPolicy
from recommend.policies import MANAGED_BY, policy_name, types
from recommend.ports import takes_ports

__all__ = ["K8S_API", "k8s_document"]

K8S_API = "networking.k8s.io/v1"
_NS_LABEL = "kubernetes.io/metadata.name"


def k8s_document(policy: WorkloadPolicy, tier: str, network_sets: Sequence[NetworkSet],
                 services: Sequence[Service], warnings: list[str]) -> dict[str, Any] | None:
    """The Kubernetes NetworkPolicy for ``policy``, or ``None`` when no rule survives."""
    target = policy.target
    name = policy_name(policy, tier)
    sets = {s.identity: s for s in network_sets}
    svcs = {(s.namespace, s.name): s for s in services}
    rules = {}
    for direction, rs in (("ingress", policy.ingress), ("egress", policy.egress)):
        converted = [_rule(r, target.namespace, sets, svcs, f"{name} {direction}", warnings)
                     for r in rs]
        rules[direction] = [r for r in converted if r is not None]
    if not rules["ingress"] and not rules["egress"]:
        warnings.append(f"{name}: no rule can be expressed as a Kubernetes NetworkPolicy; "
                        "not written")
        return None
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": dict(target.labels)} if target.labels else {},
        "policyTypes": [t for t in types(policy) if rules[t.lower()]],
    }
    spec.update({d: rules[d] for d in ("ingress", "egress") if rules[d]})
    return {"apiVersion": K8S_API, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": target.namespace,
                         "labels": dict(MANAGED_BY)},
            "spec": spec}


def _rule(rule: Rule, namespace: str, sets: Mapping[str, NetworkSet],
          svcs: Mapping[tuple[str, str], Service], where: str,
          warnings: list[str]) -> dict[str, Any] | None:
    if not takes_ports(rule.protocol):
        warnings.append(f"{where}: {rule.protocol} to {rule.peer.describe()} left out "
                        "(Kubernetes NetworkPolicy matches only TCP, UDP and SCTP)")
        return None
    peers = _peers(rule, namespace, sets, svcs)
    if peers == []:
        warnings.append(f"{where}: {rule.protocol} {_ports_text(rule)} to "
                        f"{rule.peer.describe()} left out ({_why_not(rule)})")
        return None
    out: dict[str, Any] = {}
    key = "to" if rule.direction == "egress" else "from"
    if peers is not None:
        out[key] = peers
    out["ports"] = _ports(rule)
    return out


def _peers(rule: Rule, namespace: str, sets: Mapping[str, NetworkSet],
           svcs: Mapping[tuple[str, str], Service]) -> list[dict[str, Any]] | None:
    """The rule's peers; ``None`` for any peer, ``[]`` when none can be expressed."""
    peer, cat = rule.peer, rule.category
    if cat is Category.PUBLIC:
        return None
    if cat in (Category.PRIVATE, Category.NETWORK_SET, Category.DOMAINS):
        return [{"ipBlock": {"cidr": c}} for c in _cidrs(rule, sets)]
    if cat is Category.SERVICE:
        svc = svcs.get(peer.service) if peer.service else None
        if svc is None or not svc.selector:
            return []
        return [_pod_peer(dict(svc.selector), svc.namespace, namespace)]
    return [_pod_peer(dict(peer.labels), peer.namespace, namespace)]


def _pod_peer(labels: dict[str, str], peer_ns: str | None, namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if labels:
        out["podSelector"] = {"matchLabels": labels}
    if peer_ns is not None and (peer_ns != namespace or not labels):
        out["namespaceSelector"] = {"matchLabels": {_NS_LABEL: peer_ns}}
    return out


def _cidrs(rule: Rule, sets: Mapping[str, NetworkSet]) -> list[str]:
    if rule.category is Category.PRIVATE:
        return list(rule.peer.nets)
    if rule.category is Category.NETWORK_SET:
        found = sets.get(rule.peer.network_set or "")
        return sorted({str(n) for n in found.nets}) if found else []
    ips = sorted({ipaddress.ip_address(ip) for o in rule.evidence for ip in o.peer_ips},
                 key=lambda a: (a.version, a))
    return [f"{ip}/{ip.max_prefixlen}" for ip in ips]


def _why_not(rule: Rule) -> str:
    if rule.category is Category.DOMAINS:
        return "the records carry no destination addresses for these names"
    if rule.category is Category.NETWORK_SET:
        return "the network set is not among the policies given"
    return "the inventory does not list the service's selector"


def _ports(rule: Rule) -> list[dict[str, Any]]:
    if not rule.ports:
        return [{"protocol": rule.protocol}]
    out = []
    for p in rule.ports:
        if isinstance(p, str):
            first, last = (int(x) for x in p.split(":"))
            out.append({"protocol": rule.protocol, "port": first, "endPort": last})
        else:
            out.append({"protocol": rule.protocol, "port": p})
    return out


def _ports_text(rule: Rule) -> str:
    return ",".join(map(str, rule.ports)) or "any port"
