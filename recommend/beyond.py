"""What a recommendation allows that was never observed, so a reviewer can judge the margin:
other pods its selectors match (from the inventory), every address of a network set or
address block, any peer of a Public rule, DNS ports added without traffic, all ports where
records had none. One note per finding, e.g.
``egress rule 2: also matches storefront/frontend-v2-5c9d-abcde (not observed)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from policy import Endpoint, NetworkSet, parse_selector
from recommend.cluster import Cluster, pod_workload
from recommend.model import Category, Rule, WorkloadPolicy
from recommend.observe import workload_key

__all__ = ["beyond"]

_MAX_LISTED = 5


def beyond(policy: WorkloadPolicy, cluster: Cluster,
           network_sets: Iterable[NetworkSet] = ()) -> list[str]:
    """Notes on what ``policy`` allows beyond its evidence, policy first, then per rule."""
    notes = _applies_to(policy, cluster)
    sets = {s.identity: s for s in network_sets}
    for label, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        for i, rule in enumerate(rules):
            notes += [f"{label} rule {i}: {n}" for n in _rule_notes(rule, policy, cluster,
                                                                    sets)]
    return notes


def _applies_to(policy: WorkloadPolicy, cluster: Cluster) -> list[str]:
    target = policy.target
    selector = parse_selector(target.selector)
    extra = [ep for ep in cluster.pods_in(target.namespace)
             if selector.matches(ep.selector_labels)
             and pod_workload(ep) not in target.workloads]
    if not extra:
        return []
    return [f"the policy also applies to {_pods(extra)} (no traffic observed for them)"]


def _rule_notes(rule: Rule, policy: WorkloadPolicy, cluster: Cluster,
                sets: dict[str, NetworkSet]) -> list[str]:
    notes = []
    if rule.dns:
        seen = {o.port for o in rule.evidence}
        if 53 not in seen:
            notes.append(f"{rule.protocol} 53 to the cluster DNS was not observed; added so "
                         "that name resolution keeps working")
    if not rule.ports and rule.category is not Category.SERVICE and \
            str(rule.protocol) in ("TCP", "UDP", "SCTP"):
        notes.append("every port (the records carry none)")
    notes += _peer_notes(rule, policy, cluster, sets)
    return notes


def _peer_notes(rule: Rule, policy: WorkloadPolicy, cluster: Cluster,
                sets: dict[str, NetworkSet]) -> list[str]:
    cat, peer = rule.category, rule.peer
    if cat is Category.PUBLIC:
        return ["any peer, in or outside the cluster, on these ports (Calico's Public rule "
                "has no peer criteria)"]
    if cat is Category.PRIVATE:
        return ["every private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), which "
                "includes the cluster's pods and nodes"]
    if cat is Category.NETWORK_SET:
        found = sets.get(peer.network_set or "")
        nets = ", ".join(str(n) for n in found.nets) if found else "its CIDRs"
        return [f"every address of network set {peer.network_set} ({nets})"]
    if cat is Category.DOMAINS:
        wild = [d for d in peer.domains if d.startswith("*.")]
        notes = ["every address these names resolve to, and names sharing those addresses "
                 "(Calico enforces domains by the IPs DNS returned)"]
        return notes + [f"any subdomain of {d[2:]}" for d in wild]
    if cat is Category.NAMESPACE and not rule.dns:  # the DNS workload is meant whole
        return _workload_notes(rule, policy, cluster)
    return []


def _workload_notes(rule: Rule, policy: WorkloadPolicy, cluster: Cluster) -> list[str]:
    peer = rule.peer
    ns = peer.namespace or policy.target.namespace
    seen = {workload_key(o.peer.name_aggr) for o in rule.evidence if o.peer.namespace == ns}
    selector = parse_selector(peer.selector) if peer.selector else None
    extra = [ep for ep in cluster.pods_in(ns)
             if (selector is None or selector.matches(ep.selector_labels))
             and pod_workload(ep) not in seen]
    if not cluster.inventory.endpoints:
        return [f"any pod in {ns} matching {peer.selector or 'all()'} (no inventory to list "
                "them)"]
    return [f"also matches {_pods(extra)} (not observed)"] if extra else []


def _pods(pods: list[Endpoint]) -> str:
    names = [ep.identity for ep in pods]
    more = len(names) - _MAX_LISTED
    return ", ".join(names[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
