"""Reading Calico rules (``spec.ingress[]`` / ``spec.egress[]``) with Calico's validation.

Kept apart from the document-level parsing because Kubernetes policies are converted into the
same :class:`~policy.model.Rule` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from policy.domains import validate_domain
from policy.fields import FieldReader
from policy.model import (
    Action,
    Direction,
    EntityRule,
    IcmpMatch,
    NamedPort,
    Port,
    PortRange,
    Rule,
    ServiceMatch,
)

__all__ = ["PROTOCOLS", "PROTOCOL_NAMES", "protocol_number", "read_rule"]

PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
_PORTED = {6, 17, 132}
_ICMP = {1, 58}
_PROTOCOL_EXPECTED = "must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255"
_PORT_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,126}[a-zA-Z0-9])?$")
_RULE_FIELDS = ("action", "protocol", "notProtocol", "icmp", "notICMP", "ipVersion", "source",
                "destination", "http", "metadata")
_ENTITY_FIELDS = ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports",
                  "notPorts", "serviceAccounts", "services", "domains")


def protocol_number(value: object) -> int | None:
    """``TCP``/``tcp``/``6``/``"6"`` → 6; ``None`` for anything Calico would not accept."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 255 else None
    if isinstance(value, str):
        for name, number in PROTOCOLS.items():
            if value in (name, name.lower(), name.upper()):
                return number
        if value.isdigit():
            return protocol_number(int(value))
    return None


def _protocol(r: FieldReader, value: object, path: str) -> int | None:
    if value is None:
        return None
    number = protocol_number(value)
    if number is None:
        raise r.fail(path, value, _PROTOCOL_EXPECTED)
    return number


def read_port(r: FieldReader, value: object, path: str) -> Port:
    """``80``, ``"80"``, ``"8000:8080"`` or a named port such as ``"http"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        r.integer(value, path, 0, 65535)
        return PortRange(value, value)
    if isinstance(value, str):
        if ":" in value:
            lo, _, hi = value.partition(":")
            if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi) <= 65535:
                return PortRange(int(lo), int(hi))
        elif value.isdigit() and int(value) <= 65535:
            return PortRange(int(value), int(value))
        elif _PORT_NAME.match(value):
            return NamedPort(value)
    raise r.fail(path, value, "must be a port 0-65535, a range 'first:last' or a port name")


def _ports(r: FieldReader, value: object, path: str) -> tuple[Port, ...]:
    items = r.sequence(value, path)
    if len(items) > 50:
        raise r.fail(path, f"<{len(items)} ports>", "may list at most 50 ports")
    return tuple(read_port(r, v, f"{path}[{i}]") for i, v in enumerate(items))


def _icmp(r: FieldReader, value: object, path: str) -> IcmpMatch | None:
    if value is None:
        return None
    m = r.mapping(value, path, ("type", "code"))
    t = None if m.get("type") is None else r.integer(m["type"], f"{path}.type", 0, 254)
    c = None if m.get("code") is None else r.integer(m["code"], f"{path}.code", 0, 255)
    if c is not None and t is None:
        raise r.fail(f"{path}.code", c, "requires icmp type to be set")
    return IcmpMatch(t, c)


def _entity(r: FieldReader, value: object, path: str) -> EntityRule:
    m = r.mapping(value, path, _ENTITY_FIELDS)
    sa = r.mapping(m.get("serviceAccounts"), f"{path}.serviceAccounts", ("names", "selector"))
    svc = None
    if m.get("services") is not None:
        s = r.mapping(m["services"], f"{path}.services", ("name", "namespace"))
        svc = ServiceMatch(
            r.string(s.get("name"), f"{path}.services.name", required=True) or "",
            r.string(s.get("namespace"), f"{path}.services.namespace") or "",
        )
    domains = r.strings(m.get("domains"), f"{path}.domains")
    for i, d in enumerate(domains):
        problem = validate_domain(d)
        if problem:
            raise r.fail(f"{path}.domains[{i}]", d, problem)
    for key in ("nets", "notNets"):
        if len(r.sequence(m.get(key), f"{path}.{key}")) > 256:
            raise r.fail(f"{path}.{key}", "<list>", "may list at most 256 CIDRs")
    return EntityRule(
        nets=r.cidrs(m.get("nets"), f"{path}.nets"),
        not_nets=r.cidrs(m.get("notNets"), f"{path}.notNets"),
        selector=r.selector(m.get("selector"), f"{path}.selector"),
        not_selector=r.selector(m.get("notSelector"), f"{path}.notSelector"),
        namespace_selector=r.selector(m.get("namespaceSelector"), f"{path}.namespaceSelector"),
        ports=_ports(r, m.get("ports"), f"{path}.ports"),
        not_ports=_ports(r, m.get("notPorts"), f"{path}.notPorts"),
        service_account_names=tuple(sorted(r.strings(sa.get("names"),
                                                     f"{path}.serviceAccounts.names"))),
        service_account_selector=r.selector(sa.get("selector"), f"{path}.serviceAccounts.selector"),
        services=svc,
        domains=tuple(d.lower() for d in domains),
    )


def read_rule(
    r: FieldReader, value: object, path: str, direction: Direction, namespace: str | None
) -> Rule:
    """Read and validate one Calico rule; ``namespace`` defaults ``services.namespace``."""
    m = r.mapping(value, path, _RULE_FIELDS)
    action = Action(r.enum(m.get("action"), f"{path}.action", [a.value for a in Action],
                           fold=True))
    protocol = _protocol(r, m.get("protocol"), f"{path}.protocol")
    ip_version = None
    if m.get("ipVersion") is not None:
        ip_version = int(r.enum(m["ipVersion"] if not isinstance(m["ipVersion"], int)
                                else str(m["ipVersion"]), f"{path}.ipVersion", ("4", "6")))
    rule = Rule(
        action=action,
        protocol=protocol,
        not_protocol=_protocol(r, m.get("notProtocol"), f"{path}.notProtocol"),
        icmp=_icmp(r, m.get("icmp"), f"{path}.icmp"),
        not_icmp=_icmp(r, m.get("notICMP"), f"{path}.notICMP"),
        ip_version=ip_version,
        source=_entity(r, m.get("source"), f"{path}.source"),
        destination=_entity(r, m.get("destination"), f"{path}.destination"),
        http=tuple(sorted(r.mapping(m.get("http"), f"{path}.http",
                                    ("methods", "paths", "headers")).items())),
        annotations=r.labels(r.mapping(m.get("metadata"), f"{path}.metadata",
                                       ("annotations",)).get("annotations"),
                             f"{path}.metadata.annotations"),
    )
    _check_rule(r, rule, m, path, direction)
    if rule.destination.services and not rule.destination.services.namespace and namespace:
        svc = ServiceMatch(rule.destination.services.name, namespace)
        rule = _with_dst_service(rule, svc)
    if rule.source.services and not rule.source.services.namespace and namespace:
        rule = _with_src_service(rule, ServiceMatch(rule.source.services.name, namespace))
    return rule


def _with_dst_service(rule: Rule, svc: ServiceMatch) -> Rule:
    return replace(rule, destination=replace(rule.destination, services=svc))


def _with_src_service(rule: Rule, svc: ServiceMatch) -> Rule:
    return replace(rule, source=replace(rule.source, services=svc))


def _check_rule(
    r: FieldReader, rule: Rule, raw: Mapping[str, Any], path: str, direction: Direction
) -> None:
    """Calico's cross-field rules (libcalico-go validator and the CRDs' CEL rules)."""
    for side, ent in (("source", rule.source), ("destination", rule.destination)):
        for key, ports in (("ports", ent.ports), ("notPorts", ent.not_ports)):
            if ports and rule.protocol not in _PORTED:
                raise r.fail(f"{path}.protocol", raw.get("protocol"),
                             f"must be TCP, UDP or SCTP because {side}.{key} is set "
                             "(rules that specify ports must set protocol to TCP, UDP or SCTP)")
        _check_entity(r, ent, raw, f"{path}.{side}", side, direction)
    for key, icmp in (("icmp", rule.icmp), ("notICMP", rule.not_icmp)):
        if icmp is not None and rule.protocol not in _ICMP:
            raise r.fail(f"{path}.protocol", raw.get("protocol"),
                         f"must be ICMP or ICMPv6 because {key} is set")
    if rule.destination.domains and rule.action is not Action.ALLOW:
        raise r.fail(f"{path}.action", raw.get("action"),
                     "must be Allow when destination.domains is set")
    if rule.http and (rule.action is not Action.ALLOW or rule.protocol not in (None, 6)):
        raise r.fail(f"{path}.http", raw.get("http"),
                     "is only allowed on Allow rules with protocol TCP or no protocol")
    versions: set[int] = {n.version for e in (rule.source, rule.destination)
                          for n in e.nets + e.not_nets}
    if rule.ip_version is not None:
        versions.add(rule.ip_version)
    if len(versions) > 1:
        raise r.fail(f"{path}", "<rule>", "must not mix IPv4 and IPv6 CIDRs or ipVersion")


def _check_entity(
    r: FieldReader, ent: EntityRule, raw: Mapping[str, Any], path: str, side: str,
    direction: Direction,
) -> None:
    raw_ent = raw.get(side) or {}
    if ent.domains:
        if side != "destination" or direction is not Direction.EGRESS:
            raise r.fail(f"{path}.domains", raw_ent.get("domains"),
                         "is only allowed in the destination of egress rules")
        if ent.nets or ent.selector is not None:
            raise r.fail(f"{path}.domains", raw_ent.get("domains"),
                         "cannot be combined with nets or selector")
    if ent.services is not None:
        clash = [k for k in ("selector", "notSelector", "namespaceSelector", "nets", "notNets",
                             "serviceAccounts") if raw_ent.get(k)]
        if clash:
            raise r.fail(f"{path}.services", raw_ent.get("services"),
                         f"cannot be combined with {', '.join(clash)}")
        if side == "destination" and (ent.ports or ent.not_ports):
            raise r.fail(f"{path}.ports", raw_ent.get("ports"),
                         "cannot be set with destination.services (the service's ports apply)")
    for key in ("selector", "notSelector"):
        sel = getattr(ent, "selector" if key == "selector" else "not_selector")
        if sel is not None and "global()" in str(sel):
            raise r.fail(f"{path}.{key}", raw_ent.get(key),
                         "must not use global() (only a namespaceSelector may)")
