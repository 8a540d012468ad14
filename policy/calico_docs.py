"""``projectcalico.org/v3`` documents → model values, validated as Calico validates them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policy.domains import validate_domain
from policy.fields import FieldReader
from policy.model import (
    ALL,
    DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
    Action,
    Direction,
    NetworkSet,
    Origin,
    Policy,
    PolicyKind,
    StagedAction,
    Tier,
)
from policy.rules import read_rule

__all__ = [
    "read_metadata",
    "read_network_set",
    "read_policy",
    "read_tier",
    "read_types",
    "validate_name",
]

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_META_FIELDS = ("name", "namespace", "labels", "annotations", "uid", "resourceVersion",
                "creationTimestamp", "generation", "managedFields", "ownerReferences",
                "finalizers", "generateName", "deletionTimestamp", "selfLink")
_POLICY_FIELDS = ("tier", "order", "selector", "serviceAccountSelector", "types", "ingress",
                  "egress", "performanceHints")
_GLOBAL_FIELDS = ("namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward")


def validate_name(r: FieldReader, name: object, path: str = "metadata.name") -> str:
    text = r.string(name, path, required=True) or ""
    if len(text) > 253 or not _DNS1123_SUBDOMAIN.match(text):
        raise r.fail(path, name, "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')")
    return text


def read_metadata(r: FieldReader, doc: Mapping[str, Any],
                  namespaced: bool) -> tuple[str, str | None, Mapping[str, Any]]:
    meta = r.mapping(doc.get("metadata"), "metadata", _META_FIELDS)
    name = validate_name(r, meta.get("name"))
    namespace = None
    if namespaced:
        namespace = r.string(meta.get("namespace"), "metadata.namespace") or "default"
    elif meta.get("namespace") is not None:
        raise r.fail("metadata.namespace", meta["namespace"],
                     f"must not be set: {doc.get('kind')} is cluster-scoped")
    return name, namespace, meta


def read_tier(r: FieldReader, doc: Mapping[str, Any], origin: Origin) -> Tier:
    name, _, _ = read_metadata(r, doc, namespaced=False)
    spec = r.mapping(doc.get("spec"), "spec", ("order", "defaultAction"))
    order = r.number(spec.get("order"), "spec.order")
    action = Action(r.enum(spec.get("defaultAction", "Deny"), "spec.defaultAction",
                           ("Deny", "Pass")))
    if name == DEFAULT_TIER:
        if order not in (None, DEFAULT_TIER_ORDER):
            raise r.fail("spec.order", spec.get("order"),
                         "of the default tier must be 1000000 (Calico fixes it)")
        if action is not Action.DENY:
            raise r.fail("spec.defaultAction", spec.get("defaultAction"),
                         "of the default tier must be Deny")
        order = DEFAULT_TIER_ORDER
    return Tier(name, order, action, origin)


def default_types(spec: Mapping[str, Any]) -> tuple[Direction, ...]:
    """Calico's defaulting: egress rules only → [Egress]; both → both; otherwise [Ingress]."""
    has_in, has_out = bool(spec.get("ingress")), bool(spec.get("egress"))
    if has_out and not has_in:
        return (Direction.EGRESS,)
    if has_out:
        return (Direction.INGRESS, Direction.EGRESS)
    return (Direction.INGRESS,)


def read_types(r: FieldReader, value: object, path: str) -> tuple[Direction, ...]:
    items = r.sequence(value, path)
    seen = {r.enum(v, f"{path}[{i}]", ("Ingress", "Egress")) for i, v in enumerate(items)}
    return tuple(d for d in (Direction.INGRESS, Direction.EGRESS) if d.value in seen)


def _check_tier_name(r: FieldReader, name: str, tier: str) -> None:
    # Calico Enterprise (and OSS <= 3.31): a policy in tier T != default must be named
    # "T.<rest>"; in the default tier a dotted name must start with "default.".
    if tier != DEFAULT_TIER and not name.startswith(f"{tier}."):
        raise r.fail("metadata.name", name,
                     f"must start with '{tier}.' because the policy is in tier {tier!r}")
    if tier == DEFAULT_TIER and "." in name and not name.startswith("default."):
        raise r.fail("metadata.name", name,
                     "in the default tier must have no dot or start with 'default.'")


def read_policy(r: FieldReader, doc: Mapping[str, Any], kind: PolicyKind,
                origin: Origin) -> Policy:
    """NetworkPolicy, GlobalNetworkPolicy and their staged kinds."""
    name, namespace, meta = read_metadata(r, doc, kind.namespaced)
    allowed = _POLICY_FIELDS + (() if kind.namespaced else _GLOBAL_FIELDS)
    allowed += ("stagedAction",) if kind.staged else ()
    spec = r.mapping(doc.get("spec"), "spec", allowed)
    tier = r.string(spec.get("tier"), "spec.tier") or DEFAULT_TIER
    _check_tier_name(r, name, tier)
    staged_action = None
    if kind.staged:
        staged_action = StagedAction(r.enum(spec.get("stagedAction", "Set"), "spec.stagedAction",
                                            [a.value for a in StagedAction]))
    selector = r.selector(spec.get("selector"), "spec.selector") or ALL
    if "global()" in str(selector):
        raise r.fail("spec.selector", spec.get("selector"), "must not use global()")
    types = (read_types(r, spec["types"], "spec.types") if spec.get("types")
             else default_types(spec))
    rules = {}
    for d, key in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
        items = r.sequence(spec.get(key), f"spec.{key}")
        if len(items) > 1024:
            raise r.fail(f"spec.{key}", f"<{len(items)} rules>", "may have at most 1024 rules")
        rules[d] = tuple(read_rule(r, v, f"spec.{key}[{i}]", d, namespace)
                         for i, v in enumerate(items))
    policy = Policy(
        kind=kind, name=name, namespace=namespace, tier=tier,
        order=r.number(spec.get("order"), "spec.order"),
        selector=selector, types=types,
        ingress=rules[Direction.INGRESS], egress=rules[Direction.EGRESS],
        namespace_selector=r.selector(spec.get("namespaceSelector"), "spec.namespaceSelector"),
        service_account_selector=r.selector(spec.get("serviceAccountSelector"),
                                            "spec.serviceAccountSelector"),
        staged_action=staged_action,
        do_not_track=r.boolean(spec.get("doNotTrack"), "spec.doNotTrack"),
        pre_dnat=r.boolean(spec.get("preDNAT"), "spec.preDNAT"),
        apply_on_forward=r.boolean(spec.get("applyOnForward"), "spec.applyOnForward"),
        labels=r.labels(meta.get("labels"), "metadata.labels"),
        annotations=r.labels(meta.get("annotations"), "metadata.annotations"),
        origin=origin,
    )
    _check_host_flags(r, policy, spec)
    return policy


def _check_host_flags(r: FieldReader, p: Policy, spec: Mapping[str, Any]) -> None:
    if p.do_not_track and p.pre_dnat:
        raise r.fail("spec.preDNAT", True, "cannot be combined with doNotTrack")
    if (p.do_not_track or p.pre_dnat) and not p.apply_on_forward:
        raise r.fail("spec.applyOnForward", spec.get("applyOnForward"),
                     "must be true when doNotTrack or preDNAT is set")
    if p.pre_dnat and (p.egress or Direction.EGRESS in p.types):
        raise r.fail("spec.types", spec.get("types"), "must not include Egress with preDNAT")


def read_network_set(r: FieldReader, doc: Mapping[str, Any], origin: Origin) -> NetworkSet:
    namespaced = doc.get("kind") == "NetworkSet"
    name, namespace, meta = read_metadata(r, doc, namespaced)
    spec = r.mapping(doc.get("spec"), "spec", ("nets", "allowedEgressDomains"))
    domains = r.strings(spec.get("allowedEgressDomains"), "spec.allowedEgressDomains")
    for i, d in enumerate(domains):
        problem = validate_domain(d)
        if problem:
            raise r.fail(f"spec.allowedEgressDomains[{i}]", d, problem)
    return NetworkSet(
        name=name,
        namespace=namespace,
        labels=r.labels(meta.get("labels"), "metadata.labels"),
        nets=r.cidrs(spec.get("nets"), "spec.nets"),
        allowed_egress_domains=tuple(d.lower() for d in domains),
        origin=origin,
    )
