"""The capture reader on hand-built files: containers, link types, IP/transport decoding,
truncation, every kind of reject, and streaming in small chunks."""

from __future__ import annotations

import io
import struct

import pytest
from pcap_samples import (
    T0,
    arp,
    block,
    brief,
    epb,
    eth,
    icmp_echo,
    idb,
    obsolete_pb,
    pcap,
    read_all,
    record,
    shb,
    spb,
    tcp,
    udp,
)
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from ingest.pcap import read_pcap
from ingest.schema import SEGMENTS, Reject

SYN = tcp("10.0.0.1", "10.0.0.2", 40000, 80, "S")
SYNACK = tcp("10.0.0.2", "10.0.0.1", 80, 40000, "SA")
# (interval start, conn_id, conn_start, proto, src, sport, dst, dport, pkts/bytes fwd,
# pkts/bytes rev, started, completed); times in µs after T0
HANDSHAKE = (0, 0, 0, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 1, 40, 1, 40, True, False)
MAGICS = "a pcap (a1b2c3d4 or a1b23c4d, either byte order) or pcapng (0a0d0d0a) file"


def handshake(link: int, wrap: object) -> bytes:
    return pcap([(T0, wrap(SYN)), (T0 + 100, wrap(SYNACK))], link=link)  # type: ignore[operator]


def sll(pkt: object) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 6, 0x0800) + bytes(pkt)  # type: ignore[call-overload]


def sll2(pkt: object) -> bytes:
    return struct.pack(">HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, b"\x02" * 6) + bytes(pkt)  # type: ignore[call-overload]


@pytest.mark.parametrize(("order", "nano"), [("<", False), (">", False), ("<", True),
                                             (">", True)])
def test_classic_pcap_in_both_byte_orders_and_resolutions(order: str, nano: bool) -> None:
    data = pcap([(T0 + 1, eth(SYN)), (T0 + 101, eth(SYNACK))], order=order, nano=nano)
    got = read_all(data)
    assert [brief(r) for r in got.segments] == [
        (0, 0, 1, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 1, 40, 1, 40, True, False)]
    assert (got.packets, got.skipped, got.rejects) == (2, 0, [])


@pytest.mark.parametrize(("link", "wrap"), [
    (1, eth),
    (1, lambda p: bytes(Ether() / Dot1Q(vlan=5) / p)),
    (1, lambda p: bytes(Ether(type=0x88A8) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / p)),
    (113, sll),
    (276, sll2),
    (101, bytes),
    (12, bytes),
    (14, bytes),
    (228, bytes),
    (0, lambda p: struct.pack("<I", 2) + bytes(p)),
    (0, lambda p: struct.pack(">I", 2) + bytes(p)),
    (108, lambda p: struct.pack(">I", 2) + bytes(p)),
], ids=["ethernet", "802.1q", "802.1ad", "sll", "sll2", "raw101", "raw12", "raw14", "ipv4",
        "null-le", "null-be", "loop"])
def test_link_types(link: int, wrap: object) -> None:
    got = read_all(handshake(link, wrap))
    assert [brief(r) for r in got.segments] == [HANDSHAKE]
    assert got.rejects == []


def test_ipv6_link_type_and_extension_headers() -> None:
    a, b = "2001:db8::1", "2001:db8::2"
    syn = IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / tcp(a, b, 1, 2, "S")[1]
    first = IPv6(src=b, dst=a) / IPv6ExtHdrFragment(offset=0, m=0, id=9) / tcp(b, a, 2, 1, "SA")[1]
    later = IPv6(src=b, dst=a) / IPv6ExtHdrFragment(nh=6, offset=100, m=0, id=9) / (b"x" * 8)
    got = read_all(pcap([(T0, bytes(syn)), (T0 + 1, bytes(first)), (T0 + 2, bytes(later))],
                        link=229))
    assert [brief(r) for r in got.segments] == [
        (0, 0, 0, 6, a, 1, b, 2, 1, 76, 1, 68, True, False),
        # a later fragment has no transport header: its own flow, without ports
        (0, 1, 2, 6, b, None, a, None, 1, 56, 0, 0, False, False)]
    assert got.rejects == []


def test_snaplen_truncated_capture_counts_ip_length() -> None:
    big = tcp("10.0.0.1", "10.0.0.2", 40000, 80, "PA", b"x" * 1000)
    got = read_all(pcap([(T0, eth(SYN)), (T0 + 1, eth(big))], snaplen=64, caplen=64))
    assert [brief(r) for r in got.segments] == [
        (0, 0, 0, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 2, 1080, 0, 0, True, False)]
    assert got.rejects == []


def test_non_ip_frames_are_skipped_not_rejected() -> None:
    got = read_all(pcap([(T0, arp()), (T0 + 1, eth(SYN)), (T0 + 2, arp())]))
    assert (got.packets, got.skipped, got.rejects, len(got.segments)) == (3, 2, [], 1)


def test_icmp_echo_is_one_connection_keyed_by_identifier() -> None:
    got = read_all(pcap([(T0, eth(icmp_echo("10.0.0.1", "10.0.0.2", False))),
                         (T0 + 5, eth(icmp_echo("10.0.0.2", "10.0.0.1", True))),
                         (T0 + 9, eth(icmp_echo("10.0.0.1", "10.0.0.2", False, ident=8)))]))
    rows = [(brief(r), r["icmp_type"], r["icmp_code"]) for r in got.segments]
    assert rows == [
        ((0, 0, 0, 1, "10.0.0.1", None, "10.0.0.2", None, 1, 32, 1, 32, True, False), 8, 0),
        ((0, 1, 9, 1, "10.0.0.1", None, "10.0.0.2", None, 1, 32, 0, 0, True, False), 8, 0)]


def test_pcapng_blocks_interfaces_and_resolutions() -> None:
    data = b"".join([
        shb(), idb(1, tsresol=9), idb(101, tsresol=0x80 | 20),
        block_custom(),
        epb(T0 * 1000 + 1000, eth(SYN), iface=0),
        epb((T0 + 2) * (1 << 20) // 1_000_000, bytes(SYNACK), iface=1),
        spb(eth(tcp("10.0.0.1", "10.0.0.2", 40000, 80, "A"))),
        obsolete_pb(T0 * 1000 + 9000, eth(tcp("10.0.0.1", "10.0.0.2", 40000, 80, "A"))),
    ])
    got = read_all(data)
    assert [brief(r) for r in got.segments] == [
        (0, 0, 1, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 3, 120, 1, 40, True, False)]
    assert (got.packets, got.rejects) == (4, [])


def test_pcapng_sections_change_byte_order_and_interfaces() -> None:
    data = (shb(">") + idb(1, order=">") + epb(T0, eth(SYN), order=">")
            + shb("<") + idb(101) + epb(T0 + 3, bytes(SYNACK)))
    got = read_all(data)
    assert [brief(r) for r in got.segments] == [
        (0, 0, 0, 6, "10.0.0.1", 40000, "10.0.0.2", 80, 1, 40, 1, 40, True, False)]
    assert got.rejects == []


def block_custom() -> bytes:
    """A block tierflow does not read (a Name Resolution Block): skipped."""
    return block(4, b"\0" * 8)


def test_pcap_rejects_keep_reading_where_framing_allows() -> None:
    records = [(T0, eth(SYN)), (T0 + 1, b"\x02" * 12 + b"\x08\x00" + b"\x45" + b"\0" * 5),
               (T0 + 2, eth(IP(src="10.0.0.1", dst="10.0.0.2", version=6) / (b"x" * 20))),
               (T0 + 3, eth(IP(src="10.0.0.1", dst="10.0.0.2", ihl=4) / (b"x" * 20))),
               (T0 + 4, eth(IP(src="10.0.0.1", dst="10.0.0.2", len=10) / (b"x" * 20))),
               (T0 + 5, eth(SYNACK)[:42]), (T0 + 6, eth(SYNACK))]
    data = pcap(records)
    got = read_all(data)
    at = [24]
    for ts, frame in records[:-1]:
        at.append(at[-1] + len(record(ts, frame)))
    assert got.rejects == [
        Reject("t.pcap", f"packet 2 at byte {at[1]}", "ip header", "6 bytes captured",
               "at least 20 (IPv4) or 40 (IPv6)"),
        Reject("t.pcap", f"packet 3 at byte {at[2]}", "ip version", "6",
               "4 or 6, as the link layer says"),
        Reject("t.pcap", f"packet 4 at byte {at[3]}", "ipv4 header length", "16 bytes",
               "at least 20"),
        Reject("t.pcap", f"packet 5 at byte {at[4]}", "ipv4 total length", "10",
               "at least the header length 20"),
        Reject("t.pcap", f"packet 6 at byte {at[5]}", "tcp header", "8 bytes",
               "at least 14 bytes")]
    assert [brief(r) for r in got.segments] == [HANDSHAKE]
    assert got.packets == 7


def test_unknown_link_type_is_rejected_per_packet() -> None:
    got = read_all(pcap([(T0, eth(SYN))], link=147))
    assert got.rejects == [Reject(
        "t.pcap", "packet 1 at byte 24", "link type", "147",
        "0 (null), 1 (Ethernet), 12, 14 or 101 (raw IP), 108 (loop), 113 (Linux cooked), "
        "228 (IPv4), 229 (IPv6) or 276 (Linux cooked v2)")]
    assert got.segments == []


def test_pcap_caplen_over_snaplen_skips_that_packet() -> None:
    sixty = eth(tcp("10.0.0.2", "10.0.0.1", 80, 40000, "PA", b"123456"))
    data = pcap([(T0, sixty), (T0 + 1, eth(SYN))], snaplen=54)
    got = read_all(data)
    assert got.rejects == [Reject("t.pcap", "packet 1 at byte 24", "caplen", "60",
                                  "at most the snaplen 54")]
    assert [brief(r)[8:10] for r in got.segments] == [(1, 40)]


def test_pcap_absurd_caplen_ends_the_read() -> None:
    good = record(T0, eth(SYN))
    bad = struct.pack("<IIII", T0 // 1_000_000, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"\0" * 40
    got = read_all(pcap([]) + good + bad + record(T0 + 1, eth(SYNACK)))
    assert got.rejects == [Reject(
        "t.pcap", f"packet 2 at byte {24 + len(good)}", "caplen", "2147483647",
        "at most 262144; the rest of the file cannot be framed")]
    assert (got.packets, len(got.segments)) == (2, 1)


def test_pcap_truncated_last_record() -> None:
    whole = record(T0, eth(SYN))
    got = read_all(pcap([]) + whole + record(T0 + 1, eth(SYNACK))[:30])
    assert got.rejects == [Reject(
        "t.pcap", f"packet 2 at byte {24 + len(whole)}", "record",
        "30 bytes before the end of the file", "a 16-byte record header and caplen bytes of data")]
    assert (got.packets, len(got.segments)) == (1, 1)


@pytest.mark.parametrize(("data", "value"), [(b"\xde\xad\xbe\xef" + b"\0" * 40, "deadbeef"),
                                             (b"", "empty file")])
def test_not_a_capture(data: bytes, value: str) -> None:
    got = read_all(data)
    assert got.rejects == [Reject("t.pcap", "byte 0", "magic", value, MAGICS)]


def test_pcapng_bad_block_length_stops_with_one_reject() -> None:
    head = shb() + idb(1) + epb(T0, eth(SYN))
    bad = struct.pack("<II", 6, 45) + b"\0" * 40
    got = read_all(head + bad + epb(T0 + 1, eth(SYNACK)))
    assert got.rejects == [Reject(
        "t.pcap", f"block at byte {len(head)}", "block length", "45",
        "a multiple of 4, at least 12 (32 for an enhanced packet block) and at most 16777216;"
        " the blocks after it cannot be found")]
    assert [brief(r)[8:12] for r in got.segments] == [(1, 40, 0, 0)]


def test_pcapng_block_length_mismatch_at_the_end() -> None:
    head = shb() + idb(1) + epb(T0, eth(SYN))
    bad = bytearray(epb(T0 + 1, eth(SYNACK)))
    bad[-4:] = struct.pack("<I", 12)
    got = read_all(head + bytes(bad) + epb(T0 + 2, eth(SYN)))
    assert got.rejects == [Reject(
        "t.pcap", f"block at byte {len(head)}", "block length",
        f"{len(bad)} at the start, 12 at the end",
        "the same length at both ends of the block; the blocks after it cannot be found")]
    assert got.packets == 1


def test_pcapng_truncated_block_and_unknown_interface() -> None:
    head = shb() + idb(1) + epb(T0, eth(SYN), iface=3)
    tail = epb(T0 + 1, eth(SYNACK))[:20]
    got = read_all(head + tail)
    assert got.rejects == [
        Reject("t.pcap", f"packet 1 at byte {len(shb() + idb(1))}", "interface id", "3",
               "one of the 1 interfaces described before it"),
        Reject("t.pcap", f"block at byte {len(head)}", "block", "20 bytes before the end of "
               "the file", f"{len(epb(T0 + 1, eth(SYNACK)))} bytes")]
    assert got.segments == []


def test_small_chunks_give_the_same_rows_and_ids() -> None:
    records = []
    for i in range(300):  # 100 connections of 3 packets, interleaved, over 20 minutes
        c = i % 100
        flags = ("S", "SA", "A")[i // 100]
        src, dst = ("10.0.0.1", "10.0.1.1") if flags != "SA" else ("10.0.1.1", "10.0.0.1")
        sport, dport = (30000 + c, 80) if flags != "SA" else (80, 30000 + c)
        records.append((T0 + i * 4_000_000, eth(tcp(src, dst, sport, dport, flags))))
    data = pcap(records)
    whole = read_all(data)
    chunked = read_all(data, chunk_bytes=4096)
    assert len(chunked.batches) > 5
    assert sorted(map(brief, chunked.segments)) == sorted(map(brief, whole.segments))
    # a connection's rows run from its SYN's interval to its ACK's (at 4c, 400 + 4c, 800 + 4c s)
    assert len(whole.segments) == sum((800 + 4 * c) // 300 - 4 * c // 300 + 1 for c in range(100))
    offsets = [b.bytes_read for b in chunked.batches]
    assert offsets == sorted(offsets) and offsets[-1] == len(data)


def test_path_and_file_object_sources(tmp_path: object) -> None:
    path = tmp_path / "x.pcap"  # type: ignore[operator]
    path.write_bytes(pcap([(T0, eth(SYN)), (T0 + 100, eth(SYNACK))]))
    by_path = [b.segments for b in read_pcap(path)]
    with open(path, "rb") as f:
        by_file = [b.segments for b in read_pcap(f)]
    assert by_path == by_file
    assert by_path[-1].schema == SEGMENTS
    assert [brief(r) for r in by_path[-1].to_pylist()] == [HANDSHAKE]


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"interval must be a positive number of seconds"):
        next(read_pcap(io.BytesIO(b""), interval=0))
    with pytest.raises(ValueError, match=r"chunk_bytes must be a positive number of bytes"):
        next(read_pcap(io.BytesIO(b""), chunk_bytes=0))


def test_udp_rows_have_ports_and_count_ip_bytes() -> None:
    got = read_all(pcap([(T0, eth(udp("10.0.0.1", "10.0.0.9", 5000, 9999, b"abc")))]))
    assert [brief(r) for r in got.segments] == [
        (0, 0, 0, 17, "10.0.0.1", 5000, "10.0.0.9", 9999, 1, 31, 0, 0, True, False)]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_mapped_file_in_small_chunks_reads_like_a_stream(tmp_path: object, fmt: str) -> None:
    frames = [eth(tcp("10.0.0.1", "10.0.0.2", 30000 + i % 50, 80, "PA", b"x" * (i % 300)))
              for i in range(400)]
    if fmt == "pcap":
        data = pcap([(T0 + i * 1_000_000, f) for i, f in enumerate(frames)])
    else:
        data = shb() + idb(1) + b"".join(epb(T0 + i * 1_000_000, f) for i, f in enumerate(frames))
    path = tmp_path / f"x.{fmt}"  # type: ignore[operator]
    path.write_bytes(data)
    mapped = list(read_pcap(path, name="t.pcap", chunk_bytes=4096))
    streamed = read_all(data, chunk_bytes=4096)
    assert len(mapped) > 10
    assert [b.segments for b in mapped] == [b.segments for b in streamed.batches]
    assert [b.bytes_read for b in mapped] == [b.bytes_read for b in streamed.batches]
    assert sum(b.packets for b in mapped) == 400
