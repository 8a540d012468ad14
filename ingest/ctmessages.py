"""ctnetlink messages (``linux/netfilter/nfnetlink_conntrack.h``) decoded into :class:`Entry`.

Each message is an ``nlmsghdr``, an ``nfgenmsg`` and nested attributes. An entry holds the
original and reply tuples, per-direction counters (``net.netfilter.nf_conntrack_acct=1``),
the conntrack id, TCP state, zone, and start/stop times (``nf_conntrack_timestamp=1``).

The event stream of a busy node brings thousands of messages a second, all of a few shapes
(an IPv4 TCP entry with counters and timestamps is laid out the same way every time): a
:class:`Decoder` walks the attributes of the first message of each shape, and reads the
next ones with one precompiled ``struct`` after a masked comparison that proves the shape —
about three times cheaper than walking each message, and the same :class:`Entry` values.
``ingest.ctnetlink`` has the sockets.
"""

from __future__ import annotations

import functools
import operator
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLOSING_TCP_STATES", "Decoder", "Entry", "decode", "parse_messages"]

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NLM_F_CREATE = 0x400
NLA_TYPE_MASK = 0x3FFF

# Attribute types (CTA_*) used here.
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_TIMEOUT = 1, 2, 3, 4, 7
CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID, CTA_ZONE, CTA_TIMESTAMP = 9, 10, 12, 18, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE = 5, 6
CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE = 8, 9
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES, CTA_COUNTERS32_PACKETS, CTA_COUNTERS32_BYTES = 1, 2, 3, 4
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2

#: TCP conntrack states after which Felix expires a connection (TIME_WAIT, CLOSE).
CLOSING_TCP_STATES = frozenset({7, 8})

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")
NLA = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class Entry:
    """One conntrack entry as ctnetlink describes it (counters None without acct)."""

    kind: str  # "entry" (dump), "new" or "destroy" (events)
    id: int | None
    family: int  # 4 or 6
    proto: int
    orig_src: str
    orig_dst: str
    orig_sport: int | None
    orig_dport: int | None
    reply_src: str
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    packets_orig: int | None
    bytes_orig: int | None
    packets_reply: int | None
    bytes_reply: int | None
    tcp_state: int | None
    zone: int
    start_ns: int | None
    stop_ns: int | None
    #: Identity: the kernel's id with the original tuple and zone (ids are reused).
    key: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Made once: the agent looks every entry of every dump up by its key.
        object.__setattr__(self, "key", (self.id, self.zone, self.proto, self.orig_src,
                                         self.orig_dst, self.orig_sport, self.orig_dport))


def _attrs(data: bytes | memoryview, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type → (payload start, payload end) for the attributes in [start, end)."""
    out = {}
    pos = start
    while pos + 4 <= end:
        length, kind = NLA.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            break
        out[kind & NLA_TYPE_MASK] = (pos + 4, pos + length)
        pos += (length + 3) & ~3
    return out


@functools.lru_cache(maxsize=1 << 16)
def _ip_text(raw: bytes) -> str:
    # Cached: a node's entries name few addresses, each of them many times.
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


Where = dict[str, tuple[int, str]]  # Entry field → (offset in the buffer, struct code)
_IP_FIELDS = ("orig_src", "orig_dst", "reply_src", "reply_dst")
_FIELDS = ("id", "family", "proto", "orig_src", "orig_dst", "orig_sport", "orig_dport",
           "reply_src", "reply_dst", "reply_sport", "reply_dport", "icmp_type", "icmp_code",
           "packets_orig", "bytes_orig", "packets_reply", "bytes_reply", "tcp_state", "zone",
           "start_ns", "stop_ns")  # Entry's fields after ``kind``
_ABSENT = {"proto": 0, "zone": 0, **dict.fromkeys(_IP_FIELDS, "")}  # others: None


def _locate(data: bytes | memoryview, start: int,
            end: int) -> tuple[Where, int, bytearray] | None:
    """Where the entry's values are in the message at [start, end), its address family,
    and a byte mask of the message's structure (attribute headers and padding, 0xff) as
    opposed to values (0); None when it has no original tuple."""
    mask = bytearray(end - start)

    def nest(a: int, b: int) -> dict[int, tuple[int, int]]:
        mask[a - start:b - start] = b"\xff" * (b - a)
        spans = _attrs(data, a, b)
        for x, y in spans.values():
            mask[x - start:y - start] = bytes(y - x)
        return spans

    top = nest(start + NLMSGHDR.size + NFGENMSG.size, end)
    if CTA_TUPLE_ORIG not in top:
        return None
    where: Where = {}
    family = _locate_tuple(nest, top[CTA_TUPLE_ORIG], "orig", where)
    if CTA_TUPLE_REPLY in top:
        _locate_tuple(nest, top[CTA_TUPLE_REPLY], "reply", where)
    else:  # the reply is the original turned around
        for reply, orig in (("reply_src", "orig_dst"), ("reply_dst", "orig_src"),
                            ("reply_sport", "orig_dport"), ("reply_dport", "orig_sport")):
            if orig in where:
                where[reply] = where[orig]
    _locate_state(nest, top, where)
    return where, family, mask


def _locate_state(nest: Callable[[int, int], dict[int, tuple[int, int]]],
                  top: dict[int, tuple[int, int]], where: Where) -> None:
    """Locate the counters, TCP state, timestamps, id and zone."""
    for side, attr in (("orig", CTA_COUNTERS_ORIG), ("reply", CTA_COUNTERS_REPLY)):
        if attr in top:
            counters = nest(*top[attr])
            for name, wide, narrow in (("packets", CTA_COUNTERS_PACKETS, CTA_COUNTERS32_PACKETS),
                                       ("bytes", CTA_COUNTERS_BYTES, CTA_COUNTERS32_BYTES)):
                if wide in counters:
                    where[f"{name}_{side}"] = (counters[wide][0], "Q")
                elif narrow in counters:
                    where[f"{name}_{side}"] = (counters[narrow][0], "I")
    if CTA_PROTOINFO in top and CTA_PROTOINFO_TCP in (info := nest(*top[CTA_PROTOINFO])):
        tcp = nest(*info[CTA_PROTOINFO_TCP])
        if CTA_PROTOINFO_TCP_STATE in tcp:
            where["tcp_state"] = (tcp[CTA_PROTOINFO_TCP_STATE][0], "B")
    if CTA_TIMESTAMP in top:
        ts = nest(*top[CTA_TIMESTAMP])
        for name, attr in (("start_ns", CTA_TIMESTAMP_START), ("stop_ns", CTA_TIMESTAMP_STOP)):
            if attr in ts:
                where[name] = (ts[attr][0], "Q")
    for name, attr, code in (("id", CTA_ID, "I"), ("zone", CTA_ZONE, "H")):
        if attr in top:
            where[name] = (top[attr][0], code)


def _locate_tuple(nest: Callable[[int, int], dict[int, tuple[int, int]]],
                  span: tuple[int, int], side: str, where: Where) -> int:
    """Locate a CTA_TUPLE_*'s addresses, protocol and ports; returns its family (4, 6, 0)."""
    top = nest(*span)
    ip = nest(*top[CTA_TUPLE_IP]) if CTA_TUPLE_IP in top else {}
    family = 0
    for fam, src, dst in ((4, CTA_IP_V4_SRC, CTA_IP_V4_DST), (6, CTA_IP_V6_SRC, CTA_IP_V6_DST)):
        if src in ip:
            for name, (a, b) in ((f"{side}_src", ip[src]), (f"{side}_dst", ip[dst])):
                where[name] = (a, f"{b - a}s")
            family = fam
            break
    pr = nest(*top[CTA_TUPLE_PROTO]) if CTA_TUPLE_PROTO in top else {}
    for name, attr in ((f"{side}_sport", CTA_PROTO_SRC_PORT),
                       (f"{side}_dport", CTA_PROTO_DST_PORT)):
        if attr in pr:
            where[name] = (pr[attr][0], "H")
    if side == "orig":  # the protocol and ICMP type are the original direction's
        for name, attrs in (("proto", (CTA_PROTO_NUM,)),
                            ("icmp_type", (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_TYPE)),
                            ("icmp_code", (CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMPV6_CODE))):
            found = next((pr[a] for a in attrs if a in pr), None)
            if found:
                where[name] = (found[0], "B")
    return family


class _Layout:
    """How to read every message shaped like one: the same length and the same attribute
    headers at the same offsets make the same attribute tree, so one ``struct`` reads all
    the values of any such message."""

    def __init__(self, data: bytes | memoryview, start: int, end: int, where: Where,
                 family: int, mask: bytearray) -> None:
        self.mask = int.from_bytes(mask, "little")
        self.template = int.from_bytes(data[start:end], "little") & self.mask
        fields = sorted(set(where.values()))
        fmt, pos = ">", start
        for offset, code in fields:
            fmt += f"{offset - pos}x{code}"
            pos = offset + struct.calcsize(">" + code)
        self.values = struct.Struct(fmt)
        slot = {f: i for i, f in enumerate(fields)}
        ips = sorted({slot[where[n]] for n in _IP_FIELDS if n in where})
        self.ips = _getter(ips)
        consts = {f: _ABSENT.get(f) for f in _FIELDS if f not in where} | {"family": family}
        ordered = list(consts)
        self.consts = tuple(consts.values())
        base = len(fields) + len(ips)
        self.pick = _getter([
            base + ordered.index(f) if f in consts else
            len(fields) + ips.index(slot[where[f]]) if f in _IP_FIELDS else slot[where[f]]
            for f in _FIELDS])

    def read(self, data: bytes | memoryview, start: int, kind: str) -> Entry:
        values = self.values.unpack_from(data, start)
        texts = tuple(map(_ip_text, self.ips(values)))
        return Entry(kind, *self.pick(values + texts + self.consts))


def _getter(indices: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """``operator.itemgetter`` that returns a tuple for any number of indices."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    return lambda values: tuple(values[i] for i in indices)


class Decoder:
    """Decodes ctnetlink messages into :class:`Entry` values. Each shape of message is
    analysed once (:class:`_Layout`); the next messages of that shape are checked against
    it (one masked comparison) and read by one ``struct`` call, several times faster than
    walking their attributes."""

    def __init__(self, max_shapes: int = 256) -> None:
        self._layouts: dict[int, list[_Layout]] = {}
        self.max_shapes = max_shapes

    def decode(self, data: bytes | memoryview, start: int, end: int,
               kind: str) -> Entry | None:
        """The entry in the ctnetlink message at [start, end) (header included), or None
        when it has no original tuple."""
        shapes = self._layouts.get(end - start, ())
        if shapes:
            bits = int.from_bytes(data[start:end], "little")
            for layout in shapes:
                if bits & layout.mask == layout.template:
                    return layout.read(data, start, kind)
        found = _locate(data, start, end)
        if found is None:
            return None
        layout = _Layout(data, start, end, *found)
        if len(self._layouts) < self.max_shapes and len(shapes) < 8:
            self._layouts.setdefault(end - start, []).append(layout)
        return layout.read(data, start, kind)


def decode(data: bytes | memoryview, start: int, end: int, kind: str) -> Entry | None:
    """The entry in the ctnetlink message at [start, end) (header included), or None when it
    has no original tuple (one message; use a :class:`Decoder` for many)."""
    return Decoder().decode(data, start, end, kind)


def parse_messages(data: bytes | memoryview, decoder: Decoder | None = None,
                   ) -> Iterator[tuple[int, int, Entry | None]]:
    """(message type, flags, entry) per netlink message in one receive buffer; errors and
    DONE come with entry None."""
    decoder = decoder or Decoder()
    pos = 0
    while pos + NLMSGHDR.size <= len(data):
        length, mtype, flags, _seq, _pid = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > len(data):
            break
        entry = None
        if mtype >> 8 == NFNL_SUBSYS_CTNETLINK:
            op = mtype & 0xFF
            kind = ("new" if flags & NLM_F_CREATE else "update") if op == IPCTNL_MSG_CT_NEW \
                else "destroy" if op == IPCTNL_MSG_CT_DELETE else "entry"
            entry = decoder.decode(data, pos, pos + length, kind)
        yield mtype, flags, entry
        pos += (length + 3) & ~3
