"""``tierflow simulate`` probes: JSON lines → flows, and verdicts → JSON objects.

A probe: ``{"from": "NS/POD" | IP, "to": "NS/POD" | IP, "port": N, "protocol": "TCP"|...|N,
"domains": [...]?, "icmp": {"type": T, "code": C}?, "source_port": N?}``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ingest.inventory import Inventory
from policy import DirectionVerdict, Flow, Peer, Verdict
from policy.rules import protocol_number

__all__ = ["ProbeError", "parse_probe", "read_probes", "verdict_json"]


class ProbeError(ValueError):
    def __init__(self, source: str, line: int, field: str, value: object, expected: str):
        super().__init__(f"{source} line {line}: {field} {expected} (got {value!r})")


@dataclass(frozen=True)
class Probe:
    """One flow to evaluate; ``raw`` is what is echoed in the output (the probe's fields,
    rewritten to the backend for a probe to a Service ClusterIP)."""

    raw: Mapping[str, Any]
    flow: Flow


def _peer(inv: Inventory, value: object, where: tuple[str, int], field: str,
          port: int | None, domains: frozenset[str] = frozenset()) -> Peer:
    if not isinstance(value, str) or not value:
        raise ProbeError(*where, field, value, "must be 'namespace/pod' or an IP address")
    if "/" in value:  # an IP address never contains "/"
        ep = inv.endpoint(value)
        if ep is None:
            raise ProbeError(*where, field, value, "names no pod in the inventory")
        return Peer(endpoint=ep, ip=ep.ips[0] if ep.ips else None, port=port, domains=domains)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ProbeError(*where, field, value, "must be 'namespace/pod' or an IP address") from None
    services = frozenset((s.namespace, s.name) for s in inv.services_for_ip(ip))
    return Peer(endpoint=inv.endpoint_for_ip(ip), ip=ip, port=port, domains=domains,
                services=services)


def _port(value: object, where: tuple[str, int], field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ProbeError(*where, field, value, "must be an integer from 0 to 65535")
    return value


def parse_probe(obj: object, inv: Inventory, source: str, line: int) -> list[Probe]:
    """The flows one probe line stands for: itself, or — to a Service ClusterIP:port — one
    per backend pod at its target port, as Calico sees the connection after kube-proxy's
    DNAT (``service`` and ``service_port`` are added to each)."""
    where = (source, line)
    if not isinstance(obj, dict):
        raise ProbeError(*where, "probe", obj, "must be a JSON object")
    proto = protocol_number(obj.get("protocol", "TCP"))
    if proto is None:
        raise ProbeError(*where, "protocol", obj.get("protocol"),
                         "must be one of TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or 1-255")
    domains = obj.get("domains") or []
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ProbeError(*where, "domains", domains, "must be a list of names")
    icmp = obj.get("icmp") or {}
    if not isinstance(icmp, dict) or set(icmp) - {"type", "code"}:
        raise ProbeError(*where, "icmp", icmp, "must be an object {type, code}")
    for key, hi in (("type", 254), ("code", 255)):
        v = icmp.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi):
            raise ProbeError(*where, f"icmp.{key}", v, f"must be an integer from 0 to {hi}")
    if icmp.get("code") is not None and icmp.get("type") is None:
        raise ProbeError(*where, "icmp.code", icmp["code"], "requires icmp.type")
    port = None if proto in (1, 58) else _port(obj.get("port"), where, "port")
    src = _peer(inv, obj.get("from"), where, "from", _port(obj.get("source_port"), where,
                                                          "source_port"))
    dst = _peer(inv, obj.get("to"), where, "to", port,
                frozenset(d.lower().rstrip(".") for d in domains))
    flow = Flow(src, dst, proto, icmp.get("type"), icmp.get("code"))
    dnat = inv.backends(dst.ip, port, proto) if dst.ip is not None and port is not None \
        and dst.endpoint is None else None
    if dnat is None:
        return [Probe(obj, flow)]
    svc, sp, backends = dnat
    extra = {"service": f"{svc.namespace}/{svc.name}", "service_port": sp.port}
    if not backends:  # no endpoints: kube-proxy rejects; report against the ClusterIP
        return [Probe({**obj, **extra, "backends": 0}, flow)]
    return [Probe({**obj, "to": ep.identity, "port": target, **extra},
                  replace(flow, dst=Peer(endpoint=ep, ip=ep.ips[0], port=target,
                                         domains=dst.domains, services=dst.services)))
            for ep, target in backends]


def read_probes(lines: Iterator[str], inv: Inventory, source: str
                ) -> Iterator[Probe | ProbeError]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield from parse_probe(json.loads(line), inv, source, n)
        except json.JSONDecodeError as e:
            yield ProbeError(source, n, "probe", line.strip()[:60],
                             f"must be one JSON object per line ({e.msg} at column {e.colno})")
        except ProbeError as e:
            yield e


def _direction(enforced: DirectionVerdict, pending: DirectionVerdict) -> dict[str, Any]:
    return {
        "verdict": enforced.action or "uncertain",
        "pending_verdict": pending.action or "uncertain",
        "policed": enforced.policed,
        "enforced_policies": enforced.rendered(),
        "pending_policies": pending.rendered(),
    }


def verdict_json(probe: Probe, v: Verdict) -> dict[str, Any]:
    return {
        **probe.raw,
        "verdict": v.action or "uncertain",
        "pending_verdict": v.pending_action or "uncertain",
        "egress": _direction(v.egress, v.pending_egress),
        "ingress": _direction(v.ingress, v.pending_ingress),
    }
