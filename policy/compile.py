"""Policies compiled once into small matcher values, with Felix's selector scoping.

Scoping (``libcalico-go`` update processors, ``reference/calico.md`` §4):

* a NetworkPolicy applies to ``(selector) && projectcalico.org/namespace == '<ns>'``; a
  GlobalNetworkPolicy to ``(selector) && <pcns.-prefixed namespaceSelector>``; either adds
  ``pcsa.``-prefixed ``serviceAccountSelector``;
* a rule side's ``selector``/``serviceAccounts`` are ANDed with the namespace clause (its
  ``namespaceSelector``, or the policy's own namespace for a namespaced policy) when it has a
  selector, service accounts, a notSelector or a namespaceSelector; a rule with only nets or
  ports is not namespace-limited; ``notSelector`` itself is never scoped.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.domains import DomainPattern
from policy.endpoints import NAMESPACE, SERVICE_ACCOUNT
from policy.model import (
    Action,
    Direction,
    EntityRule,
    IcmpMatch,
    IpNet,
    Policy,
    Port,
    Rule,
    ServiceMatch,
)
from policy.selector import Selector, parse_selector

__all__ = ["CompiledEntity", "CompiledPolicy", "CompiledRule", "compile_policy"]


@dataclass(frozen=True, slots=True)
class CompiledEntity:
    nets: tuple[IpNet, ...]
    not_nets: tuple[IpNet, ...]
    selector: Selector | None
    not_selector: Selector | None
    ports: tuple[Port, ...]
    not_ports: tuple[Port, ...]
    services: ServiceMatch | None
    domains: tuple[DomainPattern, ...]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    action: Action
    protocol: int | None
    not_protocol: int | None
    icmp: IcmpMatch | None
    not_icmp: IcmpMatch | None
    ip_version: int | None
    src: CompiledEntity
    dst: CompiledEntity
    # An egress Allow rule's destination selector also admits network sets by their
    # allowedEgressDomains (Calico honours those only there).
    allow_set_domains: bool


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy: Policy
    applies_to: Selector
    ingress: tuple[CompiledRule, ...]
    egress: tuple[CompiledRule, ...]
    hit_name: str

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def selects(self, direction: Direction) -> bool:
        return direction in self.policy.types


def _and(*parts: Selector | None) -> Selector | None:
    out: Selector | None = None
    for p in parts:
        if p is not None:
            out = p if out is None else out.and_(p)
    return out


def _own_namespace(ns: str) -> Selector:
    return parse_selector(f"{NAMESPACE} == '{ns}'")


def _sa_selector(names: tuple[str, ...], sel: Selector | None) -> Selector | None:
    by_name = None
    if names:
        quoted = ", ".join(f"'{n}'" for n in names)
        by_name = parse_selector(f"{SERVICE_ACCOUNT} in {{{quoted}}}")
    by_labels = None
    if sel is not None:
        by_labels = (parse_selector(f"has({SERVICE_ACCOUNT})") if sel.is_all
                     else sel.prefixed("pcsa."))
    return _and(by_labels, by_name)


def _entity(ent: EntityRule, namespace: str | None) -> CompiledEntity:
    ns_clause = None
    if ent.namespace_selector is not None:
        ns_clause = ent.namespace_selector.as_namespace_selector()
    elif namespace is not None:
        ns_clause = _own_namespace(namespace)
    selector = _and(_sa_selector(ent.service_account_names, ent.service_account_selector),
                    ent.selector)
    if ns_clause is not None and (selector is not None or ent.not_selector is not None
                                  or ent.namespace_selector is not None):
        selector = _and(ns_clause, selector)
    return CompiledEntity(
        nets=ent.nets, not_nets=ent.not_nets, selector=selector, not_selector=ent.not_selector,
        ports=ent.ports, not_ports=ent.not_ports, services=ent.services,
        domains=tuple(DomainPattern(d) for d in ent.domains),
    )


def _rule(rule: Rule, index: int, direction: Direction, namespace: str | None) -> CompiledRule:
    return CompiledRule(
        index=index, action=rule.action, protocol=rule.protocol, not_protocol=rule.not_protocol,
        icmp=rule.icmp, not_icmp=rule.not_icmp, ip_version=rule.ip_version,
        src=_entity(rule.source, namespace), dst=_entity(rule.destination, namespace),
        allow_set_domains=direction is Direction.EGRESS and rule.action is Action.ALLOW,
    )


def hit_name(p: Policy) -> str:
    """The policy part of a classic Enterprise flow-log hit (``reference/calico.md`` §1.4)."""
    if p.kind.kubernetes:
        base = f"knp.default.{p.name}"
        return f"{p.namespace}/{'staged:' if p.staged else ''}{base}"
    short = p.name[len(p.tier) + 1:] if p.name.startswith(f"{p.tier}.") else p.name
    name = f"{p.tier}.{'staged:' if p.staged else ''}{short}"
    return f"{p.namespace}/{name}" if p.kind.namespaced else name


def compile_policy(p: Policy) -> CompiledPolicy:
    ns = p.namespace if p.kind.namespaced else None
    if ns is not None:
        applies = _and(p.selector, _own_namespace(ns))
    else:
        ns_sel = p.namespace_selector.as_namespace_selector() if p.namespace_selector else None
        applies = _and(p.selector, ns_sel)
    applies = _and(applies, _sa_selector((), p.service_account_selector))
    assert applies is not None
    return CompiledPolicy(
        policy=p,
        applies_to=applies,
        ingress=tuple(_rule(r, i, Direction.INGRESS, ns) for i, r in enumerate(p.ingress)),
        egress=tuple(_rule(r, i, Direction.EGRESS, ns) for i, r in enumerate(p.egress)),
        hit_name=hit_name(p),
    )
