"""``networking.k8s.io/v1`` NetworkPolicy (and Calico's StagedKubernetesNetworkPolicy) → model.

The conversion is Calico's own (``libcalico-go/lib/backend/k8s/conversion``), because the rule
index in a flow-log hit string refers to the *converted* rule list:

* each Kubernetes rule becomes (distinct protocols of its ports, sorted: SCTP, TCP, UDP) ×
  (its peers, in order) Calico Allow rules, protocol-major; no ports → one rule, any protocol;
* a port entry without ``port`` opens every port of its protocol and absorbs that protocol's
  other ports; numeric ports of one protocol are merged into sorted ranges, names first;
* pod selectors get ``projectcalico.org/orchestrator == 'k8s'`` (so they never match network
  sets); ``namespaceSelector: {}`` is every namespace; ``ipBlock`` is ``nets``/``notNets``;
* omitted ``policyTypes`` default as the API server does: Ingress, plus Egress when
  ``spec.egress`` has a rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from policy.calico_docs import read_metadata, read_types
from policy.fields import FieldReader
from policy.model import (
    DEFAULT_TIER,
    KNP_ORDER,
    Action,
    Direction,
    EntityRule,
    NamedPort,
    Origin,
    Policy,
    PolicyKind,
    Port,
    PortRange,
    Rule,
    StagedAction,
)
from policy.rules import PROTOCOLS, read_port
from policy.selector import Selector, parse_selector

__all__ = ["label_selector", "read_k8s_policy"]

_K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ORCHESTRATOR = "projectcalico.org/orchestrator == 'k8s'"


def _quote_set(values: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{v}'" for v in values) + "}"


def label_selector(r: FieldReader, value: object, path: str, *, pod: bool) -> Selector | None:
    """A Kubernetes LabelSelector as Calico's selector (``None`` for an absent selector)."""
    if value is None:
        return parse_selector(_ORCHESTRATOR) if pod else None
    m = r.mapping(value, path, ("matchLabels", "matchExpressions"))
    parts = [_ORCHESTRATOR] if pod else []
    labels = r.labels(m.get("matchLabels"), f"{path}.matchLabels")
    parts += [f"{k} == '{v}'" for k, v in labels]
    for i, e in enumerate(r.sequence(m.get("matchExpressions"), f"{path}.matchExpressions")):
        parts.append(_expression(r, e, f"{path}.matchExpressions[{i}]"))
    if not parts:
        return parse_selector("all()")
    try:
        return parse_selector(" && ".join(parts))
    except ValueError as e:
        raise r.fail(path, value,
                     f"must use label keys and values Calico can select on ({e})") from e


def _expression(r: FieldReader, value: object, path: str) -> str:
    e = r.mapping(value, path, ("key", "operator", "values"))
    key = r.string(e.get("key"), f"{path}.key", required=True) or ""
    op = r.enum(e.get("operator"), f"{path}.operator", ("In", "NotIn", "Exists", "DoesNotExist"))
    values = r.strings(e.get("values"), f"{path}.values")
    if op in ("In", "NotIn") and not values:
        raise r.fail(f"{path}.values", e.get("values"), f"must be non-empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and values:
        raise r.fail(f"{path}.values", e.get("values"), f"must be empty for operator {op}")
    return {
        "In": f"{key} in {_quote_set(values)}",
        "NotIn": f"{key} not in {_quote_set(values)}",
        "Exists": f"has({key})",
        "DoesNotExist": f"!has({key})",
    }[op]


def _peer(r: FieldReader, value: object, path: str) -> EntityRule:
    p = r.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if p.get("ipBlock") is not None:
        if p.get("podSelector") is not None or p.get("namespaceSelector") is not None:
            raise r.fail(f"{path}.ipBlock", p["ipBlock"],
                         "cannot be combined with podSelector or namespaceSelector")
        b = r.mapping(p["ipBlock"], f"{path}.ipBlock", ("cidr", "except"))
        cidr = r.cidr(b.get("cidr"), f"{path}.ipBlock.cidr")
        excepts = r.cidrs(b.get("except"), f"{path}.ipBlock.except")
        for i, ex in enumerate(excepts):
            if ex.version != cidr.version or not ex.subnet_of(cidr):  # type: ignore[arg-type]
                raise r.fail(f"{path}.ipBlock.except[{i}]", str(ex), f"must be inside {cidr}")
        return EntityRule(nets=(cidr,), not_nets=excepts)
    if p.get("podSelector") is None and p.get("namespaceSelector") is None:
        raise r.fail(path, value, "must set podSelector, namespaceSelector or ipBlock")
    return EntityRule(
        selector=label_selector(r, p.get("podSelector"), f"{path}.podSelector", pod=True),
        namespace_selector=label_selector(r, p.get("namespaceSelector"),
                                          f"{path}.namespaceSelector", pod=False),
    )


def _port_groups(r: FieldReader, items: Sequence[Any], path: str) -> dict[str, list[Port] | None]:
    """Ports grouped by protocol; ``None`` = every port of that protocol."""
    groups: dict[str, list[Port] | None] = {}
    for i, value in enumerate(items):
        p = r.mapping(value, f"{path}[{i}]", ("port", "protocol", "endPort"))
        proto = r.enum(p.get("protocol", "TCP"), f"{path}[{i}].protocol", _K8S_PROTOCOLS)
        if p.get("port") is None:
            if p.get("endPort") is not None:
                raise r.fail(f"{path}[{i}].endPort", p["endPort"], "requires port to be set")
            groups[proto] = None
            continue
        port = read_port(r, p["port"], f"{path}[{i}].port")
        if isinstance(port, PortRange) and not 1 <= port.first == port.last <= 65535:
            raise r.fail(f"{path}[{i}].port", p["port"], "must be a port 1-65535 or a port name")
        if p.get("endPort") is not None:
            if not isinstance(port, PortRange):
                raise r.fail(f"{path}[{i}].endPort", p["endPort"], "requires a numeric port")
            end = r.integer(p["endPort"], f"{path}[{i}].endPort", port.first, 65535)
            port = PortRange(port.first, end)
        if proto not in groups:
            groups[proto] = [port]
        elif groups[proto] is not None:
            groups[proto].append(port)  # type: ignore[union-attr]
    return groups


def simplify_ports(ports: list[Port]) -> tuple[Port, ...]:
    """Calico's ``SimplifyPorts``: names first, numeric ports sorted and merged into ranges."""
    numeric = [p for p in ports if isinstance(p, PortRange)]
    # Upstream counts expanded port numbers (a range counts every port, duplicates too).
    if len(ports) <= 1 or sum(p.last - p.first + 1 for p in numeric) <= 1:
        return tuple(ports)
    values = sorted({v for p in numeric for v in range(p.first, p.last + 1)})
    merged: list[Port] = [p for p in ports if isinstance(p, NamedPort)]
    start = prev = values[0]
    for v in values[1:]:
        if v != prev + 1:
            merged.append(PortRange(start, prev))
            start = v
        prev = v
    merged.append(PortRange(start, prev))
    return tuple(merged)


def _convert_rule(r: FieldReader, value: object, path: str, direction: Direction) -> list[Rule]:
    peer_key = "from" if direction is Direction.INGRESS else "to"
    m = r.mapping(value, path, (peer_key, "ports"))
    peers: list[EntityRule] = [
        _peer(r, p, f"{path}.{peer_key}[{i}]")
        for i, p in enumerate(r.sequence(m.get(peer_key), f"{path}.{peer_key}"))
    ] or [EntityRule()]
    items = r.sequence(m.get("ports"), f"{path}.ports")
    groups: dict[str, list[Port] | None] = _port_groups(r, items, f"{path}.ports") if items else {}
    out = []
    for proto in sorted(groups) or [""]:
        ports = simplify_ports(groups[proto] or []) if proto else ()
        for peer in peers:
            ports_ent = EntityRule(ports=ports)
            if direction is Direction.INGRESS:
                src, dst = peer, ports_ent
            else:
                src, dst = EntityRule(), _merge(peer, ports)
            out.append(Rule(Action.ALLOW, protocol=PROTOCOLS[proto] if proto else None,
                            source=src, destination=dst))
    return out


def _merge(peer: EntityRule, ports: tuple[Port, ...]) -> EntityRule:
    return replace(peer, ports=ports)


def read_k8s_policy(r: FieldReader, doc: Mapping[str, Any], staged: bool,
                    origin: Origin) -> Policy:
    kind = (PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY if staged
            else PolicyKind.KUBERNETES_NETWORK_POLICY)
    name, namespace, meta = read_metadata(r, doc, namespaced=True)
    allowed = ("podSelector", "policyTypes", "ingress", "egress")
    spec = r.mapping(doc.get("spec"), "spec", (*allowed, "stagedAction") if staged else allowed)
    if "podSelector" not in spec and not staged:
        raise r.fail("spec.podSelector", None, "is required (use {} to select every pod)")
    staged_action = None
    if staged:
        staged_action = StagedAction(r.enum(spec.get("stagedAction", "Set"), "spec.stagedAction",
                                            [a.value for a in StagedAction]))
    if spec.get("policyTypes"):
        types = read_types(r, spec["policyTypes"], "spec.policyTypes")
    else:
        types = (Direction.INGRESS,) + ((Direction.EGRESS,) if spec.get("egress") else ())
    rules: dict[Direction, tuple[Rule, ...]] = {}
    for d, key in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
        rules[d] = tuple(rule for i, v in enumerate(r.sequence(spec.get(key), f"spec.{key}"))
                         for rule in _convert_rule(r, v, f"spec.{key}[{i}]", d))
    return Policy(
        kind=kind, name=name, namespace=namespace, tier=DEFAULT_TIER, order=KNP_ORDER,
        selector=label_selector(r, spec.get("podSelector"), "spec.podSelector", pod=True)
        or parse_selector(_ORCHESTRATOR),
        types=types, ingress=rules[Direction.INGRESS], egress=rules[Direction.EGRESS],
        staged_action=staged_action,
        labels=r.labels(meta.get("labels"), "metadata.labels"),
        annotations=r.labels(meta.get("annotations"), "metadata.annotations"),
        origin=origin,
    )
