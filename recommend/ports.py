"""Protocols and ports as a recommended rule writes them.

Ports are kept exactly as observed; a run of consecutive ports becomes one ``first:last``
range only when the range holds nothing that was not observed and the run is at least
:data:`MIN_RANGE` long (two neighbours stay two ports: a range would not be shorter).

>>> merge_ports([443, 8080, 8081, 8082, 80])
(80, 443, '8080:8082')
>>> calico_protocol("icmp6")
'ICMPv6'
"""

from __future__ import annotations

from collections.abc import Iterable

from policy.rules import PROTOCOL_NAMES, PROTOCOLS, protocol_number

__all__ = ["MIN_RANGE", "calico_protocol", "merge_ports", "port_sort_key", "protocol_sort_key",
           "takes_ports"]

MIN_RANGE = 3
# Calico: "rules that specify ports must set protocol to TCP or UDP or SCTP".
_PORTED = {6, 17, 132}
_ALIASES = {"icmp6": 58, "icmpv6": 58, "ipv6-icmp": 58}


def calico_protocol(proto: str | int) -> str | int:
    """A flow-log ``proto`` (``tcp``, ``icmp6``, ``"47"``) in Calico's rule spelling: the
    name where Calico has one (``TCP``, ``ICMPv6``), else the number."""
    text = str(proto).strip()
    number = _ALIASES.get(text.lower()) or protocol_number(text) \
        or protocol_number(text.upper())
    if number is None:
        for name, value in PROTOCOLS.items():
            if name.lower() == text.lower():
                number = value
    if number is None:
        raise ValueError(f"flow-log proto {proto!r} is not a protocol name Calico knows "
                         "(TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255")
    return PROTOCOL_NAMES.get(number, number)


def takes_ports(protocol: str | int) -> bool:
    return protocol_number(protocol) in _PORTED


def merge_ports(ports: Iterable[int]) -> tuple[int | str, ...]:
    """Distinct ports in order; maximal runs of :data:`MIN_RANGE` or more consecutive ports
    as ``"first:last"`` (Calico's inclusive range syntax)."""
    out: list[int | str] = []
    run: list[int] = []
    for p in sorted(set(ports)):
        if run and p != run[-1] + 1:
            out += _run(run)
            run = []
        run.append(p)
    return (*out, *_run(run))


def _run(run: list[int]) -> list[int | str]:
    return [f"{run[0]}:{run[-1]}"] if len(run) >= MIN_RANGE else list(run)


def port_sort_key(ports: tuple[int | str, ...]) -> tuple[int, ...]:
    return tuple(p if isinstance(p, int) else int(p.split(":")[0]) for p in ports)


def protocol_sort_key(protocol: str | int) -> int:
    return protocol_number(protocol) or 0
