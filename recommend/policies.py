"""Recommendations → Calico policy documents (``projectcalico.org/v3``) and their YAML.

One policy per target (reference/calico.md §7.2, adapted):

* workload scope: named ``<tier>.<workload>`` where ``<workload>`` is the controller's name
  without the ReplicaSet hash (``default.frontend``; ``cluster.stable_name``), selecting the
  workload by its stable labels. Calico's per-workload recommendations are named after the
  replica-set prefix (``default.frontend-6d996fbd97``); the stable name survives rollouts, so a
  re-run updates the same object;
* namespace scope: named ``<tier>.<namespace>`` (``namespace-isolation.storefront`` in the
  default ``namespace-isolation`` tier), selector ``projectcalico.org/namespace ==
  '<namespace>'``. Calico appends five random letters (``storefront-vfzgh``); a deterministic
  name keeps the output byte-stable and lets a re-run replace its own recommendation.

``stagedAction: Set`` (the user stages it to preview, then promotes), ``types`` from the
non-empty rule lists, no ``order`` (after the tier's ordered policies). Keys follow Calico's
own field order (``calicoctl get -o yaml``): metadata name, namespace, labels; spec tier,
selector, types, stagedAction, ingress, egress; rule action, protocol, source, destination;
entity nets, selector, namespaceSelector, services, domains, ports. Rules keep the order of
:mod:`recommend.rules`.
"""

from __future__ import annotations

from typing import Any

import yaml

from recommend.model import PeerMatch, Rule, WorkloadPolicy

__all__ = ["CALICO_API", "MANAGED_BY", "RECOMMENDATION_TIER_ORDER", "calico_document",
           "policy_name", "tier_document", "to_yaml"]

CALICO_API = "projectcalico.org/v3"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tierflow"}
# The order Calico's recommendation engine gives the namespace-isolation tier it creates.
RECOMMENDATION_TIER_ORDER = 10000


def policy_name(policy: WorkloadPolicy, tier: str) -> str:
    return f"{tier}.{policy.target.name}"


def calico_document(policy: WorkloadPolicy, tier: str, *, staged: bool = True) -> dict[str, Any]:
    """A (Staged)NetworkPolicy document for ``policy`` in ``tier``."""
    target = policy.target
    labels = dict(MANAGED_BY)
    if target.scope == "namespace":
        labels["policyrecommendation.tigera.io/scope"] = "namespace"
    spec: dict[str, Any] = {"tier": tier, "selector": target.selector,
                            "types": types(policy)}
    if staged:
        spec["stagedAction"] = "Set"
    if policy.ingress:
        spec["ingress"] = [rule_document(r) for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [rule_document(r) for r in policy.egress]
    return {
        "apiVersion": CALICO_API,
        "kind": "StagedNetworkPolicy" if staged else "NetworkPolicy",
        "metadata": {"name": policy_name(policy, tier), "namespace": target.namespace,
                     "labels": dict(sorted(labels.items()))},
        "spec": spec,
    }


def types(policy: WorkloadPolicy) -> list[str]:
    return [t for t, rules in (("Ingress", policy.ingress), ("Egress", policy.egress)) if rules]


def rule_document(rule: Rule) -> dict[str, Any]:
    doc: dict[str, Any] = {"action": "Allow", "protocol": rule.protocol}
    peer = entity(rule.peer)
    ports = {"ports": list(rule.ports)} if rule.ports else {}
    if rule.direction == "egress":
        if peer or ports:
            doc["destination"] = {**peer, **ports}
    else:
        if peer:
            doc["source"] = peer
        if ports:
            doc["destination"] = ports
    return doc


def entity(peer: PeerMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.nets:
        out["nets"] = list(peer.nets)
    if peer.selector:
        out["selector"] = peer.selector
    if peer.namespace_selector:
        out["namespaceSelector"] = peer.namespace_selector
    if peer.service:
        out["services"] = {"name": peer.service[1], "namespace": peer.service[0]}
    if peer.domains:
        out["domains"] = list(peer.domains)
    return out


def tier_document(name: str, order: float = RECOMMENDATION_TIER_ORDER) -> dict[str, Any]:
    return {"apiVersion": CALICO_API, "kind": "Tier",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "spec": {"order": order}}


# libyaml when present (the pure-Python emitter writes the same bytes, only slower).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(doc: dict[str, Any], header: str | None = None) -> str:
    """Byte-stable YAML as kubectl prints it (block style, list items at their key's indent):
    insertion order as built above, no aliases, unicode kept."""
    text = yaml.dump(doc, Dumper=_DUMPER, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)
    return (f"# {header}\n" if header else "") + text
