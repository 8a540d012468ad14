"""ctnetlink messages built byte by byte as the kernel lays them out
(``linux/netfilter/nfnetlink_conntrack.h``), decoded by ``ingest.ctmessages`` and re-dumped by
``ingest.ctnetlink.Table``. The kernel itself is tests/test_agent.py's."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

from ingest.ctmessages import NFGENMSG, NLMSGHDR, Decoder, decode
from ingest.ctnetlink import Table

ORIG, REPLY, STATUS, PROTOINFO, TIMEOUT, MARK = 1, 2, 3, 4, 7, 8
COUNTERS_ORIG, COUNTERS_REPLY, ID, ZONE, TIMESTAMP = 9, 10, 12, 18, 20
DUMPED = (1 << 8) | 0  # IPCTNL_MSG_CT_NEW without NLM_F_CREATE: a dump's entry


def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind | (0x8000 if nested else 0)) + payload + bytes(-size % 4)


def be(fmt: str, value: int) -> bytes:
    return struct.pack(">" + fmt, value)


def address_tuple(kind: int, src: str, dst: str, proto: int, ports: tuple[int, int] | None,
                  icmp: tuple[int, int] | None = None) -> bytes:
    v6 = ":" in src
    family = socket.AF_INET6 if v6 else socket.AF_INET
    ip = nla(3 if v6 else 1, socket.inet_pton(family, src)) + nla(
        4 if v6 else 2, socket.inet_pton(family, dst))
    pr = nla(1, bytes([proto]))
    if ports:
        pr += nla(2, be("H", ports[0])) + nla(3, be("H", ports[1]))
    if icmp:
        pr += nla(4, be("H", 77)) + nla(5, bytes([icmp[0]])) + nla(6, bytes([icmp[1]]))
    return nla(kind, nla(1, ip, True) + nla(2, pr, True), True)


def message(*attrs: bytes) -> bytes:
    body = NFGENMSG.pack(socket.AF_INET, 0, 0) + b"".join(attrs)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), DUMPED, 0x2, 9, 0) + body


def tcp(sport: int, counters: tuple[int, int, int, int] = (6, 400, 6, 900), *, state: int = 3,
        cid: int = 7, timeout: int = 120, tail: tuple[bytes, ...] = ()) -> bytes:
    """An IPv4 TCP entry 10.0.0.1:sport -> 10.0.0.2:80, attributes in the kernel's order."""
    po, bo, pr, br = counters
    return message(
        address_tuple(ORIG, "10.0.0.1", "10.0.0.2", 6, (sport, 80)),
        address_tuple(REPLY, "10.0.0.2", "10.0.0.1", 6, (80, sport)),
        nla(STATUS, be("I", 14)), *tail, nla(TIMEOUT, be("I", timeout)),
        nla(PROTOINFO, nla(1, nla(1, bytes([state])) + nla(2, b"\x07"), True), True),
        nla(COUNTERS_ORIG, nla(1, be("Q", po)) + nla(2, be("Q", bo)), True),
        nla(COUNTERS_REPLY, nla(1, be("Q", pr)) + nla(2, be("Q", br)), True),
        nla(TIMESTAMP, nla(1, be("Q", 1_800_000_000_000_000_000)), True),
        nla(ID, be("I", cid)))


def fields(data: bytes, decoder: Decoder | None = None) -> tuple[object, ...]:
    e = (decoder.decode if decoder else decode)(data, 0, len(data), "entry")
    assert e is not None
    return (e.orig_src, e.orig_sport, e.reply_src, e.reply_sport, e.proto, e.packets_orig,
            e.bytes_orig, e.packets_reply, e.bytes_reply, e.tcp_state, e.id, e.zone,
            e.start_ns)


def test_messages_of_one_shape_are_read_by_the_first_ones_layout() -> None:
    decoder = Decoder()
    first = fields(tcp(40000), decoder)
    second = fields(tcp(40001, (1, 60, 2, 120), state=7, cid=8), decoder)
    assert first == ("10.0.0.1", 40000, "10.0.0.2", 80, 6, 6, 400, 6, 900, 3, 7, 0,
                     1_800_000_000_000_000_000)
    assert second == ("10.0.0.1", 40001, "10.0.0.2", 80, 6, 1, 60, 2, 120, 7, 8, 0,
                      1_800_000_000_000_000_000)
    assert second == fields(tcp(40001, (1, 60, 2, 120), state=7, cid=8))  # walked afresh


def test_a_message_of_the_same_length_but_another_shape_is_walked() -> None:
    decoder = Decoder()
    marked = tcp(40000, tail=(nla(MARK, be("I", 5)),))
    zoned = tcp(40000, tail=(nla(ZONE, be("H", 3)),))  # 6 bytes, padded to MARK's 8
    assert len(marked) == len(zoned)
    assert fields(marked, decoder)[11] == 0
    assert fields(zoned, decoder)[11] == 3


def test_ipv6_icmp_and_an_entry_without_reply_tuple_or_counters() -> None:
    v6 = message(address_tuple(ORIG, "fd00::1", "fd00::2", 17, (5353, 53)), nla(ID, be("I", 9)))
    e = decode(v6, 0, len(v6), "new")
    assert e is not None and (e.kind, e.family, e.orig_src, e.reply_src, e.reply_sport) == (
        "new", 6, "fd00::1", "fd00::2", 53)
    assert (e.packets_orig, e.tcp_state, e.start_ns) == (None, None, None)
    icmp = message(address_tuple(ORIG, "10.0.0.1", "10.0.0.3", 1, None, (8, 0)),
                   address_tuple(REPLY, "10.0.0.3", "10.0.0.1", 1, None, (0, 0)))
    e = decode(icmp, 0, len(icmp), "entry")
    assert e is not None and (e.icmp_type, e.icmp_code, e.orig_sport) == (8, 0, None)
    assert decode(message(nla(ID, be("I", 1))), 0, 24, "entry") is None  # no tuple


def test_a_redump_hands_back_unchanged_entries_and_decodes_the_rest() -> None:
    dumps = iter([[tcp(1), tcp(2)],
                  [tcp(1, timeout=115), tcp(2, (7, 452, 6, 900), timeout=119), tcp(3)]])

    def messages(_netns: str | None, _family: int) -> Iterator[tuple[bytes, int, int]]:
        return ((m, 0, len(m)) for m in next(dumps))

    table = Table(messages)
    a1, b1 = table.dump()
    a2, b2, c2 = table.dump()
    assert a2 is a1  # only its timeout moved on
    assert b2 is not b1 and (b2.packets_orig, b2.bytes_orig) == (7, 452)
    assert c2.orig_sport == 3 and table.decoded == 4
