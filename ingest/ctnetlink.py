"""The kernel's connection tracking table over ctnetlink: table dumps and NEW/DESTROY events.

Raw ``AF_NETLINK`` sockets (``NETLINK_NETFILTER``), their messages decoded by
``ingest.ctmessages`` into :class:`Entry` values — a small, direct decoder, several times
cheaper per message than a general netlink library, which matters for the event stream of a
busy node.

* :func:`dump` asks for the whole table (``IPCTNL_MSG_CT_GET`` with ``NLM_F_DUMP``);
  :class:`Table` dumps it again and again and decodes only the entries that changed since
  its previous dump (a busy node's table is mostly TIME_WAIT entries that no longer change);
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
from collections.abc import Callable, Iterable, Iterator

from ingest.ctmessages import (
    CLOSING_TCP_STATES,
    CTA_TIMEOUT,
    IPCTNL_MSG_CT_GET,
    NFGENMSG,
    NFNL_SUBSYS_CTNETLINK,
    NLA,
    NLMSGHDR,
    Decoder,
    Entry,
    decode,
    parse_messages,
)

__all__ = ["CLOSING_TCP_STATES", "Decoder", "Entry", "Events", "Table", "decode", "dump",
           "in_netns", "parse_messages"]

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY = 1, 2, 3  # NFNLGRP_CONNTRACK_*
CLONE_NEWNET = 0x40000000

Message = tuple[bytes, int, int]  # a receive buffer, and where in it one message starts and ends
_LENGTH_TYPE = struct.Struct("=IH")
_TIMEOUT_ATTR = NLA.pack(8, CTA_TIMEOUT)  # the one attribute that changes in every dump


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


def _dump_messages(netns: str | None, family: int) -> Iterator[Message]:
    """(receive buffer, start, end) of each ctnetlink message of one dump of the table."""
    s = _socket(netns, 8 << 20)
    try:
        s.bind((0, 0))
        body = NFGENMSG.pack(family, 0, 0)
        header = NLMSGHDR.pack(NLMSGHDR.size + len(body),
                               (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                               NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.send(header + body)
        while True:
            data = s.recv(1 << 20)
            pos = 0
            while pos + NLMSGHDR.size <= len(data):
                length, mtype = _LENGTH_TYPE.unpack_from(data, pos)
                if length < NLMSGHDR.size or pos + length > len(data):
                    break
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, pos + NLMSGHDR.size)[0]
                    if code:
                        raise OSError(code, f"conntrack dump: {os.strerror(code)}")
                    return
                if mtype >> 8 == NFNL_SUBSYS_CTNETLINK:
                    yield data, pos, pos + length
                pos += (length + 3) & ~3
    finally:
        s.close()


def dump(netns: str | None = None, family: int = socket.AF_UNSPEC) -> list[Entry]:
    """Every entry of the conntrack table (of ``netns``), with counters."""
    decoder = Decoder()
    return [e for data, start, end in _dump_messages(netns, family)
            if (e := decoder.decode(data, start, end, "entry")) is not None]


class Table:
    """The conntrack table of one namespace, dumped again and again.

    An entry whose message is byte for byte the one of the previous dump, but for its
    remaining timeout, is not decoded again: the previous dump's :class:`Entry` object comes
    back, so ``is`` tells the caller nothing changed. On a node with 1,000 new connections a
    second the table holds some 120,000 TIME_WAIT entries that no longer change: decoding
    them all again took about 2.5 s of every 5 s interval, passing them over takes about
    0.5 s, most of it the kernel's dump (bench/bench_agent.py). The price is the messages of
    one dump kept in memory (about 250 bytes an entry).
    """

    def __init__(self, messages: Callable[[str | None, int], Iterable[Message]] | None = None,
                 ) -> None:
        self._messages = messages or _dump_messages  # tests hand in their own messages
        self._known: dict[bytes, Entry] = {}
        self._decoder = Decoder()
        self.decoded = 0  # entries decoded, in every dump so far (the others were known)

    def dump(self, netns: str | None = None, family: int = socket.AF_UNSPEC) -> list[Entry]:
        """Every entry of the table, as :func:`dump` returns them."""
        known, now, out = self._known, {}, []
        for data, start, end in self._messages(netns, family):
            # The netlink header (flags, sequence number) differs between dumps; so does
            # CTA_TIMEOUT, which the kernel puts before the counters, the TCP state and
            # the timestamps. Should its header's bytes also occur earlier (inside a
            # tuple), the real timeout stays in the key, which then changes from one dump
            # to the next: the entry is decoded again, never taken for unchanged.
            body = start + NLMSGHDR.size
            at = data.find(_TIMEOUT_ATTR, body, end)
            key = data[body:end] if at < 0 else data[body:at] + data[at + 8:end]
            entry = known.get(key)
            if entry is None:
                entry = self._decoder.decode(data, start, end, "entry")
                if entry is None:
                    continue
                self.decoded += 1
            now[key] = entry
            out.append(entry)
        self._known = now
        return out


class Events:
    """NEW and DESTROY events of the conntrack table, read without blocking."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 32 << 20) -> None:
        self.sock = _socket(netns, rcvbuf)
        self.sock.bind((0, (1 << (GROUP_NEW - 1)) | (1 << (GROUP_DESTROY - 1))))
        self.sock.setblocking(False)
        self._decoder = Decoder()
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
            out += [e for _t, _f, e in parse_messages(data, self._decoder) if e is not None]
        return out

    def close(self) -> None:
        self.sock.close()
