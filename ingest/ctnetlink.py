"""The kernel's connection tracking table over ctnetlink: table dumps and NEW/DESTROY events.

A small, direct decoder of the netlink messages (``linux/netfilter/nfnetlink_conntrack.h``):
each message is an ``nlmsghdr``, an ``nfgenmsg`` and nested attributes, walked with
``struct`` — several times cheaper than a general netlink library per message, which matters
for the event stream of a busy node. Decoded entries are :class:`Entry` values: the original
and reply tuples, per-direction counters (``net.netfilter.nf_conntrack_acct=1``), the
conntrack id, TCP state, zone, and start/stop times (``nf_conntrack_timestamp=1``).

* :func:`dump` asks for the whole table (``IPCTNL_MSG_CT_GET`` with ``NLM_F_DUMP``);
* :class:`Events` subscribes to ``NFNLGRP_CONNTRACK_NEW`` and ``_DESTROY``; DESTROY carries
  the final counters. A full receive buffer (``ENOBUFS``) means the kernel dropped events:
  it is counted in :attr:`Events.lost`, never ignored.

Sockets can be opened in another network namespace (``netns``, a name under
``/var/run/netns``); they stay bound to it for their whole life.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

__all__ = ["CLOSING_TCP_STATES", "Entry", "Events", "dump", "in_netns", "parse_messages"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY = 1, 2, 3  # NFNLGRP_CONNTRACK_*
NLA_TYPE_MASK = 0x3FFF
CLONE_NEWNET = 0x40000000

# Attribute types (CTA_*) used here.
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
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

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_BE16, _BE32, _BE64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


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

    @property
    def key(self) -> tuple[object, ...]:
        """Identity: the kernel's id with the original tuple and zone (ids are reused)."""
        return (self.id, self.zone, self.proto, self.orig_src, self.orig_dst,
                self.orig_sport, self.orig_dport)


def _attrs(data: bytes | memoryview, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type → (payload start, payload end) for the attributes in [start, end)."""
    out = {}
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = (pos + 4, pos + length)
        pos += (length + 3) & ~3
    return out


def _ip(data: bytes | memoryview, span: tuple[int, int]) -> str:
    a, b = span
    family = socket.AF_INET if b - a == 4 else socket.AF_INET6
    return socket.inet_ntop(family, bytes(data[a:b]))


def _tuple(data: bytes | memoryview, span: tuple[int, int]) -> tuple[object, ...]:
    """(family, src, dst, proto, sport, dport, icmp type, icmp code) of a CTA_TUPLE_*."""
    top = _attrs(data, *span)
    ip = _attrs(data, *top[CTA_TUPLE_IP]) if CTA_TUPLE_IP in top else {}
    if CTA_IP_V4_SRC in ip:
        family, src, dst = 4, _ip(data, ip[CTA_IP_V4_SRC]), _ip(data, ip[CTA_IP_V4_DST])
    elif CTA_IP_V6_SRC in ip:
        family, src, dst = 6, _ip(data, ip[CTA_IP_V6_SRC]), _ip(data, ip[CTA_IP_V6_DST])
    else:
        family, src, dst = 0, "", ""
    pr = _attrs(data, *top[CTA_TUPLE_PROTO]) if CTA_TUPLE_PROTO in top else {}
    proto = data[pr[CTA_PROTO_NUM][0]] if CTA_PROTO_NUM in pr else 0
    sport = _BE16.unpack_from(data, pr[CTA_PROTO_SRC_PORT][0])[0] \
        if CTA_PROTO_SRC_PORT in pr else None
    dport = _BE16.unpack_from(data, pr[CTA_PROTO_DST_PORT][0])[0] \
        if CTA_PROTO_DST_PORT in pr else None
    t = pr.get(CTA_PROTO_ICMP_TYPE) or pr.get(CTA_PROTO_ICMPV6_TYPE)
    c = pr.get(CTA_PROTO_ICMP_CODE) or pr.get(CTA_PROTO_ICMPV6_CODE)
    return (family, src, dst, proto, sport, dport, data[t[0]] if t else None,
            data[c[0]] if c else None)


def _counters(data: bytes | memoryview,
              span: tuple[int, int] | None) -> tuple[int | None, int | None]:
    if span is None:
        return None, None
    a = _attrs(data, *span)

    def value(wide: int, narrow: int) -> int | None:
        if wide in a:
            return int(_BE64.unpack_from(data, a[wide][0])[0])
        if narrow in a:
            return int(_BE32.unpack_from(data, a[narrow][0])[0])
        return None

    return (value(CTA_COUNTERS_PACKETS, CTA_COUNTERS32_PACKETS),
            value(CTA_COUNTERS_BYTES, CTA_COUNTERS32_BYTES))


def decode(data: bytes | memoryview, start: int, end: int, kind: str) -> Entry | None:
    """The entry in the ctnetlink message at [start, end) (header included), or None when it
    has no original tuple."""
    top = _attrs(data, start + _NLMSGHDR.size + _NFGENMSG.size, end)
    if CTA_TUPLE_ORIG not in top:
        return None
    fam, osrc, odst, proto, osport, odport, itype, icode = _tuple(data, top[CTA_TUPLE_ORIG])
    if CTA_TUPLE_REPLY in top:
        _, rsrc, rdst, _, rsport, rdport, _, _ = _tuple(data, top[CTA_TUPLE_REPLY])
    else:
        rsrc, rdst, rsport, rdport = odst, osrc, odport, osport
    po, bo = _counters(data, top.get(CTA_COUNTERS_ORIG))
    pr, br = _counters(data, top.get(CTA_COUNTERS_REPLY))
    state = None
    if CTA_PROTOINFO in top:
        info = _attrs(data, *top[CTA_PROTOINFO])
        if CTA_PROTOINFO_TCP in info:
            tcp = _attrs(data, *info[CTA_PROTOINFO_TCP])
            if CTA_PROTOINFO_TCP_STATE in tcp:
                state = data[tcp[CTA_PROTOINFO_TCP_STATE][0]]
    start_ns = stop_ns = None
    if CTA_TIMESTAMP in top:
        ts = _attrs(data, *top[CTA_TIMESTAMP])
        if CTA_TIMESTAMP_START in ts:
            start_ns = int(_BE64.unpack_from(data, ts[CTA_TIMESTAMP_START][0])[0])
        if CTA_TIMESTAMP_STOP in ts:
            stop_ns = int(_BE64.unpack_from(data, ts[CTA_TIMESTAMP_STOP][0])[0])
    cid = int(_BE32.unpack_from(data, top[CTA_ID][0])[0]) if CTA_ID in top else None
    zone = int(_BE16.unpack_from(data, top[CTA_ZONE][0])[0]) if CTA_ZONE in top else 0
    return Entry(kind, cid, int(fam), int(proto), str(osrc), str(odst), osport, odport,  # type: ignore[arg-type]
                 str(rsrc), str(rdst), rsport, rdport, itype, icode, po, bo, pr, br,  # type: ignore[arg-type]
                 state, zone, start_ns, stop_ns)


def parse_messages(data: bytes | memoryview) -> Iterator[tuple[int, int, Entry | None]]:
    """(message type, flags, entry) per netlink message in one receive buffer; errors and
    DONE come with entry None."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, mtype, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            break
        entry = None
        if mtype >> 8 == NFNL_SUBSYS_CTNETLINK:
            op = mtype & 0xFF
            kind = ("new" if flags & NLM_F_CREATE else "update") if op == IPCTNL_MSG_CT_NEW \
                else "destroy" if op == IPCTNL_MSG_CT_DELETE else "entry"
            entry = decode(data, pos, pos + length, kind)
        yield mtype, flags, entry
        pos += (length + 3) & ~3


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block in network namespace ``name`` (``/var/run/netns/NAME``; None: stay).
    Sockets opened inside stay in that namespace."""
    if name is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    except FileNotFoundError:
        os.close(here)
        raise FileNotFoundError(f"--netns {name}: no such network namespace "
                                f"(/var/run/netns/{name}; see `ip netns list`)") from None
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(target)
        os.close(here)


def _socket(netns: str | None, rcvbuf: int) -> socket.socket:
    with in_netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN: a bigger buffer if allowed
        s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
    return s


def dump(netns: str | None = None, family: int = socket.AF_UNSPEC) -> list[Entry]:
    """Every entry of the conntrack table (of ``netns``), with counters."""
    s = _socket(netns, 8 << 20)
    try:
        s.bind((0, 0))
        body = _NFGENMSG.pack(family, 0, 0)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body),
                                (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.send(header + body)
        out: list[Entry] = []
        while True:
            data = s.recv(1 << 20)
            for mtype, _flags, entry in parse_messages(data):
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, _NLMSGHDR.size)[0]
                    if code:
                        raise OSError(code, f"conntrack dump: {os.strerror(code)}")
                    return out
                if entry is not None:
                    out.append(replace(entry, kind="entry"))
    finally:
        s.close()


class Events:
    """NEW and DESTROY events of the conntrack table, read without blocking."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 32 << 20) -> None:
        self.sock = _socket(netns, rcvbuf)
        self.sock.bind((0, (1 << (GROUP_NEW - 1)) | (1 << (GROUP_DESTROY - 1))))
        self.sock.setblocking(False)
        self.lost = 0  # times the kernel reported dropped events (ENOBUFS)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 100_000) -> list[Entry]:
        """The events waiting now (at most about ``limit``)."""
        out: list[Entry] = []
        while len(out) < limit:
            try:
                data = self.sock.recv(1 << 18)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            out += [e for _t, _f, e in parse_messages(data) if e is not None]
        return out

    def close(self) -> None:
        self.sock.close()
