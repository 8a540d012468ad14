"""Conntrack snapshots: parsing every format this machine's conntrack prints, rejecting bad
lines field by field, and turning consecutive snapshots into connection segments.

Unit tests use literal lines (most copied from ``sample_flows/conntrack/``, which were
captured in the lab); the ``netns`` tests make real traffic in the lab of ``netns_lab.py``
and parse what the kernel's conntrack table then holds.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from netns_lab import HTTP_POD2, Lab, netns_lab  # noqa: F401  (pytest fixture)

from ingest.conntrack import ENTRIES, Snapshot, parse_conntrack, segments
from ingest.schema import SEGMENTS

SAMPLES = Path(__file__).parent.parent / "sample_flows" / "conntrack"
SAMPLE_TIMES = {  # from sample_flows/conntrack/README.md
    "snap-1.txt": datetime(2026, 11, 27, 14, 29, 22, 477127, UTC),
    "snap-2.txt": datetime(2026, 11, 27, 14, 29, 25, 493683, UTC),
    "snap-3.txt": datetime(2026, 11, 27, 14, 29, 28, 11655, UTC),
}
AT = datetime(2026, 11, 27, 14, 0, 10, tzinfo=UTC)  # in the 300 s window from 14:00:00


def parse(text: str, at: datetime = AT, **kw: Any) -> Snapshot:
    return parse_conntrack(text, source="snap.txt", time=at, **kw)


def only(text: str, **kw: Any) -> dict[str, Any]:
    snap = parse(text, **kw)
    assert snap.rejects == [] and snap.entries.num_rows == 1
    row: dict[str, Any] = snap.entries.to_pylist()[0]
    return row


def entry(**values: Any) -> dict[str, Any]:
    """An ENTRIES row: every column null/False/0 except ``values``."""
    row: dict[str, Any] = {f.name: None for f in ENTRIES}
    return row | {"line": 1, "unreplied": False, "assured": False, "zone": 0} | values


# --- parsing -------------------------------------------------------------------------------

DNAT_LINE = (
    "ipv4     2 tcp      6 118 TIME_WAIT src=10.244.1.11 dst=10.96.0.50 sport=38726 dport=80 "
    "packets=6 bytes=394 src=10.244.1.12 dst=10.244.1.11 sport=8080 dport=38726 packets=6 "
    "bytes=1277 [ASSURED] mark=0 delta-time=2 [start=Fri Nov 27 14:29:20 2026] use=1 "
    "id=2360392305")


def test_extended_tcp_with_accounting_timestamps_and_id() -> None:
    assert only(DNAT_LINE) == entry(
        family=4, proto=6, timeout=118, state="TIME_WAIT",
        orig_src_ip="10.244.1.11", orig_dst_ip="10.96.0.50", orig_src_port=38726,
        orig_dst_port=80, reply_src_ip="10.244.1.12", reply_dst_ip="10.244.1.11",
        reply_src_port=8080, reply_dst_port=38726, orig_packets=6, orig_bytes=394,
        reply_packets=6, reply_bytes=1277, assured=True, mark=0, use=1, ct_id=2360392305,
        delta_time=2, start=datetime(2026, 11, 27, 14, 29, 20, tzinfo=UTC))


def test_proc_ipv6_addresses_are_compressed_and_zone_shown() -> None:
    line = ("ipv6     10 tcp      6 112 TIME_WAIT src=fd00:0010:0244:0001:0000:0000:0000:0011 "
            "dst=fd00:0010:0244:0001:0000:0000:0000:0012 sport=45702 dport=8080 packets=6 "
            "bytes=528 src=fd00:0010:0244:0001:0000:0000:0000:0012 "
            "dst=fd00:0010:0244:0001:0000:0000:0000:0011 sport=8080 dport=45702 packets=6 "
            "bytes=1397 [ASSURED] mark=0 zone=0 delta-time=7 use=2")
    assert only(line) == entry(
        family=6, proto=6, timeout=112, state="TIME_WAIT", orig_src_ip="fd00:10:244:1::11",
        orig_dst_ip="fd00:10:244:1::12", orig_src_port=45702, orig_dst_port=8080,
        reply_src_ip="fd00:10:244:1::12", reply_dst_ip="fd00:10:244:1::11",
        reply_src_port=8080, reply_dst_port=45702, orig_packets=6, orig_bytes=528,
        reply_packets=6, reply_bytes=1397, assured=True, mark=0, use=2, delta_time=7)


def test_icmp_id_is_not_the_conntrack_id() -> None:
    line = ("ipv6     10 icmpv6   58 1 src=fd00:10:244:1::11 dst=fd00:10:244:1::12 type=128 "
            "code=0 id=17185 packets=1 bytes=104 src=fd00:10:244:1::12 dst=fd00:10:244:1::11 "
            "type=129 code=0 id=17185 packets=1 bytes=104 mark=0 delta-time=2 "
            "[start=Fri Nov 27 14:29:20 2026] use=1 id=718329863")
    row = only(line)
    assert (row["proto"], row["icmp_type"], row["icmp_code"], row["icmp_id"], row["ct_id"]) == (
        58, 128, 0, 17185, 718329863)
    assert row["orig_src_port"] is None and row["reply_src_port"] is None


def test_plain_format_without_accounting_unreplied() -> None:
    line = ("udp      17 29 src=10.244.1.11 dst=203.0.113.10 sport=36605 dport=9999 [UNREPLIED] "
            "src=203.0.113.10 dst=10.244.1.11 sport=9999 dport=36605 mark=0 use=1")
    assert only(line) == entry(
        family=4, proto=17, timeout=29, orig_src_ip="10.244.1.11", orig_dst_ip="203.0.113.10",
        orig_src_port=36605, orig_dst_port=9999, reply_src_ip="203.0.113.10",
        reply_dst_ip="10.244.1.11", reply_src_port=9999, reply_dst_port=36605,
        unreplied=True, mark=0, use=1)


def test_zone_mark_and_snat_reply() -> None:
    line = ("ipv4     2 tcp      6 118 TIME_WAIT src=10.244.1.11 dst=203.0.113.10 sport=37754 "
            "dport=80 packets=6 bytes=399 src=203.0.113.10 dst=198.51.100.1 sport=80 "
            "dport=37754 packets=6 bytes=1277 [ASSURED] mark=42 zone=7 delta-time=2 use=1 "
            "id=2854172033")
    row = only(line)
    assert (row["zone"], row["mark"], row["reply_dst_ip"]) == (7, 42, "198.51.100.1")


@pytest.mark.parametrize(("line", "proto", "state", "keys"), [
    ("ipv4     2 gre      47 1 timeout=3, stream_timeout=180 src=10.244.1.11 dst=10.244.1.12 "
     "srckey=0x0 dstkey=0x1f packets=1 bytes=44 [UNREPLIED] src=10.244.1.12 dst=10.244.1.11 "
     "srckey=0x1f dstkey=0x0 packets=0 bytes=0 mark=0 zone=0 delta-time=1 use=2", 47, None,
     (0, 31)),
    ("ipv4     2 unknown  253 1 src=10.244.1.11 dst=10.244.1.12 packets=1 bytes=32 [UNREPLIED] "
     "src=10.244.1.12 dst=10.244.1.11 packets=0 bytes=0 mark=0 delta-time=2 use=1 id=786898107",
     253, None, (None, None)),
    ("ipv4     2 sctp     132 8 CLOSED src=10.244.1.11 dst=10.244.1.12 sport=40000 dport=3868 "
     "packets=1 bytes=52 [UNREPLIED] src=10.244.1.12 dst=10.244.1.11 sport=3868 dport=40000 "
     "packets=0 bytes=0 mark=0 delta-time=1 use=1 id=1688597437", 132, "CLOSED", (None, None)),
])
def test_other_protocols(line: str, proto: int, state: str | None,
                         keys: tuple[int | None, int | None]) -> None:
    row = only(line)
    assert (row["proto"], row["state"], row["orig_packets"], row["unreplied"]) == (
        proto, state, 1, True)
    assert (row["gre_src_key"], row["gre_dst_key"]) == keys


def test_start_is_read_in_the_given_zone_and_day_may_be_space_padded() -> None:
    line = DNAT_LINE.replace("Fri Nov 27 14:29:20", "Sat Nov  7 09:29:20")
    assert only(line, tz="America/New_York")["start"] == datetime(2026, 11, 7, 14, 29, 20,
                                                                  tzinfo=UTC)


def test_summary_and_blank_lines_are_skipped_and_line_numbers_kept() -> None:
    text = ("conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.\n\n"
            f"{DNAT_LINE}\r\n")
    snap = parse(text)
    assert snap.rejects == [] and snap.entries.column("line").to_pylist() == [3]
    assert snap.time == AT and snap.source == "snap.txt"


def test_empty_snapshot_has_the_entries_schema() -> None:
    snap = parse("")
    assert snap.entries.schema == ENTRIES and snap.entries.num_rows == 0


def test_time_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="snapshot time must be timezone-aware"):
        parse_conntrack(DNAT_LINE, source="s", time=datetime(2026, 1, 1))


TCP = ("tcp      6 10 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 packets=1 bytes=60 "
       "src=2.2.2.2 dst=1.1.1.1 sport=80 dport=1 packets=1 bytes=60 [ASSURED] mark=0 use=1 id=9")


@pytest.mark.parametrize(("line", "message"), [
    (TCP.replace("sport=1 ", "sport=x "), "sport: 'x' (expected a port 0-65535)"),
    (TCP.replace("dport=1 ", "dport=70000 "), "reply dport: '70000' (expected a port 0-65535)"),
    (TCP.replace("dst=2.2.2.2", "dst=2.2.2.256", 1), "dst: '2.2.2.256' (expected an IPv4 address)"),
    ("ipv6 10 " + TCP, "src: '1.1.1.1' (expected an IPv6 address)"),
    (TCP.replace("src=2.2.2.2", "src=fd00::1"), "reply src: 'fd00::1' (expected an IPv4 address)"),
    (TCP.replace("bytes=60 src", "bytes=six src"), "bytes: 'six' (expected a byte count)"),
    (TCP.replace("mark=0", "mark=-1"), "mark: '-1' (expected a mark 0-4294967295)"),
    (TCP.replace(" id=9", " id=4294967296"), "id: '4294967296' (expected a conntrack id)"),
    (TCP.replace(" 6 10 ", " 6 ten "), "timeout: 'ten' (expected seconds, a whole number)"),
    (TCP.replace(" 6 10 ", " 256 10 "), "protocol: '256' (expected an IP protocol number 0-255)"),
    (TCP.replace("sport=1 dport=80 ", ""), "sport: (missing) (expected a port 0-65535)"),
    (TCP.split(" src=2.2.2.2", maxsplit=1)[0],
     "src: (missing) (expected an original and a reply tuple, each starting with src=)"),
    ("icmp 1 29 src=1.1.1.1 dst=2.2.2.2 type=8 code=300 id=1 src=2.2.2.2 dst=1.1.1.1 type=0 "
     "code=0 id=1 mark=0 use=1", "code: '300' (expected an ICMP code 0-255)"),
    (DNAT_LINE.replace("Nov 27", "Nov 37"),
     "start: 'Fri Nov 37 14:29:20 2026' (expected a ctime date like 'Fri Nov 27 14:29:20 2026')"),
    ("hello world", "protocol: 'hello world' (expected a conntrack entry: "
                    "'[ipv4 2] tcp 6 <timeout> ... src=...')"),
    ("conntrack v1.4.7 (conntrack-tools): Operation not permitted",
     "line: 'conntrack v1.4.7 (conntrack-tools): Operation not permitted' "
     "(expected a conntrack entry, not a conntrack-tools message)"),
])
def test_bad_lines_are_rejected_by_field_and_the_rest_still_parse(line: str,
                                                                  message: str) -> None:
    snap = parse(f"{TCP}\n{line}\n{DNAT_LINE}")
    assert [r.message() for r in snap.rejects] == [f"snap.txt: line 2: {message}"]
    assert snap.rejects[0].raw == line and snap.rejects[0].position == "line 2"
    assert snap.entries.column("line").to_pylist() == [1, 3]


def test_real_samples_parse_completely() -> None:
    snaps = [parse_conntrack((SAMPLES / f).read_text(), source=f, time=t)
             for f, t in SAMPLE_TIMES.items()]
    assert [(s.entries.num_rows, len(s.rejects)) for s in snaps] == [(12, 0), (7, 0), (7, 0)]
    protos = pl.DataFrame(snaps[0].entries).group_by("family", "proto").len()
    protos = protos.sort("proto", "family")
    assert protos.rows() == [(4, 1, 1), (4, 6, 4), (6, 6, 1), (4, 17, 2), (4, 47, 1),
                             (6, 58, 1), (4, 132, 1), (4, 253, 1)]


# --- segments ------------------------------------------------------------------------------

def tcp(sport: int, fwd: tuple[int, int], rev: tuple[int, int], state: str = "ESTABLISHED",
        tail: str = "", ct_id: int | None = None) -> str:
    """A conntrack -L -o extended line, 10.244.1.11:sport → 10.244.1.12:8080; ``tail`` goes
    before ``use=``."""
    return (f"ipv4     2 tcp      6 300 {state} src=10.244.1.11 dst=10.244.1.12 sport={sport} "
            f"dport=8080 packets={fwd[0]} bytes={fwd[1]} src=10.244.1.12 dst=10.244.1.11 "
            f"sport=8080 dport={sport} packets={rev[0]} bytes={rev[1]} [ASSURED] mark=0 "
            f"{tail}use=1" + (f" id={ct_id}" if ct_id else ""))


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """(minutes after 14:00, conn_id, src_port, fwd packets, fwd bytes, rev packets,
    rev bytes, started, completed) per segment, in table order."""
    assert table.schema == SEGMENTS
    base = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    return [((r["start_time"] - base) // timedelta(minutes=1), r["conn_id"], r["src_port"],
             r["packets_fwd"], r["bytes_fwd"], r["packets_rev"], r["bytes_rev"], r["started"],
             r["completed"]) for r in table.to_pylist()]


def snaps(*texts: str, every: timedelta = timedelta(minutes=5)) -> list[Snapshot]:
    """One snapshot per text, the first at ``AT``, then every ``every``."""
    return [parse(text, AT + i * every) for i, text in enumerate(texts)]


def test_three_snapshots_deltas_started_and_completed() -> None:
    s1 = "\n".join([tcp(1000, (2, 120), (1, 60)), tcp(3000, (1, 60), (0, 0), "SYN_SENT")])
    s2 = "\n".join([tcp(1000, (5, 400), (4, 900)), tcp(2000, (6, 398), (6, 524), "TIME_WAIT"),
                    tcp(3000, (3, 180), (2, 120))])
    s3 = "\n".join([tcp(2000, (6, 398), (6, 524), "TIME_WAIT"), tcp(3000, (3, 180), (2, 120))])
    assert rows(segments(snaps(s1, s2, s3))) == [
        (0, 1, 1000, 2, 120, 1, 60, True, False),
        (0, 2, 3000, 1, 60, 0, 0, True, False),
        (5, 1, 1000, 3, 280, 3, 840, False, False),
        (5, 2, 3000, 2, 120, 2, 120, False, False),
        (5, 3, 2000, 6, 398, 6, 524, True, True),  # seen only in TIME_WAIT
        (10, 1, 1000, 0, 0, 0, 0, False, True),  # gone: completed, nothing new
        (10, 2, 3000, 0, 0, 0, 0, False, False),  # idle but alive: still counted
    ]  # 2000 is not repeated at 10: it completed at 5 and sent nothing since


def test_snapshots_in_one_interval_sum_into_one_row() -> None:
    table = segments(snaps(tcp(1000, (2, 120), (1, 60)), tcp(1000, (5, 400), (4, 900)),
                           tcp(1000, (9, 700), (8, 1600)), every=timedelta(minutes=3)))
    assert rows(table) == [(0, 1, 1000, 5, 400, 4, 900, True, False),
                           (5, 1, 1000, 4, 300, 4, 700, False, False)]


def test_previous_snapshot_is_the_baseline() -> None:
    before = parse("\n".join([tcp(1000, (10, 1000), (10, 2000)), tcp(4000, (1, 60), (1, 60))]),
                   AT - timedelta(seconds=20))
    table = segments(snaps(tcp(1000, (12, 1100), (11, 2100))), previous=before)
    assert rows(table) == [(0, 1, 1000, 2, 100, 1, 100, False, False),
                           (0, 2, 4000, 0, 0, 0, 0, False, True)]


def test_a_completed_connection_reappears_only_when_it_sends_more() -> None:
    ended = tcp(1000, (6, 398), (6, 524), "TIME_WAIT")
    late = tcp(1000, (7, 450), (6, 524), "TIME_WAIT")  # a retransmitted FIN
    assert rows(segments(snaps(ended, ended, late, ""))) == [
        (0, 1, 1000, 6, 398, 6, 524, True, True), (10, 1, 1000, 1, 52, 0, 0, False, False)]


def test_without_accounting_counters_are_zero() -> None:
    line = ("udp      17 29 src=10.244.1.11 dst=10.244.1.13 sport=5353 dport=53 src=10.244.1.13 "
            "dst=10.244.1.11 sport=53 dport=5353 mark=0 use=1")
    assert rows(segments(snaps(line))) == [(0, 1, 5353, 0, 0, 0, 0, True, False)]


def test_snapshot_order_does_not_matter() -> None:
    ordered = snaps(tcp(1000, (2, 120), (1, 60)), tcp(1000, (5, 400), (4, 900)))
    assert segments(ordered[::-1]).equals(segments(ordered))


REUSED = [(0, 1, 1000, 5, 500, 5, 500, True, False), (5, 1, 1000, 0, 0, 0, 0, False, True)]


@pytest.mark.parametrize(("first", "second", "expected"), [
    (tcp(1000, (5, 500), (5, 500), ct_id=1), tcp(1000, (7, 700), (7, 700), ct_id=2),
     [*REUSED, (5, 2, 1000, 7, 700, 7, 700, True, False)]),
    (tcp(1000, (5, 500), (5, 500)), tcp(1000, (1, 60), (0, 0), "SYN_SENT"),  # counters fell
     [*REUSED, (5, 2, 1000, 1, 60, 0, 0, True, False)]),
    (tcp(1000, (5, 500), (5, 500), tail="[start=Fri Nov 27 14:00:01 2026] "),
     tcp(1000, (7, 700), (7, 700), tail="[start=Fri Nov 27 14:05:01 2026] "),
     [*REUSED, (5, 2, 1000, 7, 700, 7, 700, True, False)]),
    (tcp(1000, (5, 500), (5, 500), "TIME_WAIT"), tcp(1000, (7, 700), (7, 700)),
     [(0, 1, 1000, 5, 500, 5, 500, True, True), (5, 2, 1000, 7, 700, 7, 700, True, False)]),
])
def test_a_reused_tuple_is_a_new_connection(first: str, second: str,
                                            expected: list[tuple[Any, ...]]) -> None:
    assert rows(segments(snaps(first, second))) == expected


def test_known_start_before_the_first_interval_is_not_started() -> None:
    old = tcp(1000, (5, 500), (5, 500), tail="delta-time=600 ")
    new = tcp(2000, (5, 500), (5, 500), tail="[start=Fri Nov 27 14:00:05 2026] ")
    table = segments(snaps(f"{old}\n{new}"))
    assert [(r[2], r[-2]) for r in rows(table)] == [(1000, False), (2000, True)]
    starts = table.column("conn_start").to_pylist()
    assert starts == [AT - timedelta(minutes=10), datetime(2026, 11, 27, 14, 0, 5, tzinfo=UTC)]


def test_without_timestamps_conn_start_is_first_sight() -> None:
    table = segments(snaps("", tcp(1000, (1, 60), (0, 0))))
    assert table.column("conn_start").to_pylist() == [AT + timedelta(minutes=5)]


def test_dnat_snat_and_icmp_map_onto_segment_columns() -> None:
    snat = ("ipv4     2 tcp      6 118 ESTABLISHED src=10.244.1.11 dst=203.0.113.10 sport=37754 "
            "dport=80 packets=6 bytes=399 src=203.0.113.10 dst=198.51.100.1 sport=80 "
            "dport=37754 packets=6 bytes=1277 [ASSURED] mark=42 zone=7 use=1")
    icmp = ("ipv4     2 icmp     1 29 src=10.244.1.11 dst=10.244.1.12 type=8 code=0 id=4660 "
            "packets=1 bytes=84 src=10.244.1.12 dst=10.244.1.11 type=0 code=0 id=4660 "
            "packets=1 bytes=84 mark=0 use=1 id=2680949700")
    table = segments(snaps("\n".join([DNAT_LINE, snat, icmp])))
    cols = ["proto", "src_ip", "src_port", "dst_ip", "dst_port", "orig_dst_ip", "orig_dst_port",
            "icmp_type", "icmp_code"]
    assert table.select(cols).to_pylist() == [dict(zip(cols, r, strict=True)) for r in [
        (6, "10.244.1.11", 38726, "10.244.1.12", 8080, "10.96.0.50", 80, None, None),
        (6, "10.244.1.11", 37754, "203.0.113.10", 80, None, None, None, None),
        (1, "10.244.1.11", None, "10.244.1.12", None, None, None, 8, 0)]]


def test_no_snapshots_no_segments_and_bad_arguments() -> None:
    assert segments([]).schema == SEGMENTS and segments([]).num_rows == 0
    with pytest.raises(ValueError, match="interval must be a positive"):
        segments([], interval=0)
    later = parse("", AT + timedelta(seconds=1))
    with pytest.raises(ValueError, match=r"previous snapshot snap.txt .* must be taken before"):
        segments([parse("")], previous=later)


def test_real_samples_to_segments() -> None:
    snapshots = [parse_conntrack((SAMPLES / f).read_text(), source=f, time=t)
                 for f, t in SAMPLE_TIMES.items()]
    table = pl.DataFrame(segments(snapshots, interval=300))
    assert table.height == 13 and table["started"].all()
    assert table.filter(~pl.col("completed"))["proto"].to_list() == [132]  # SCTP, still there
    echo = table.filter(pl.col("src_port") == 34712).row(0, named=True)
    assert (echo["packets_fwd"], echo["bytes_fwd"], echo["packets_rev"], echo["bytes_rev"]) == (
        8, 3424, 6, 3320)  # the final counters of snap-3, summed from three snapshots
    assert echo["conn_start"] == datetime(2026, 11, 27, 14, 29, 20, tzinfo=UTC)


# --- real traffic --------------------------------------------------------------------------

DNS_QUERY = """
import socket, struct
name = b"".join(bytes([len(p)]) + p.encode() for p in "api.twilio.com".split("."))
q = struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + name + b"\\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.bind(("10.244.1.11", 0)); s.sendto(q, ("10.244.1.13", 53)); a = s.recv(2048)
print(s.getsockname()[1], len(q), len(a))
"""
PING = """
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b)); s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
body = struct.pack("!BBHHH", 8, 0, 0, int(sys.argv[1]), 1) + bytes(56)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)
s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (sys.argv[2], 0))
print(len(s.recvfrom(2048)[0]))
"""
CURL_STATS = "%{http_code} %{local_port} %{size_header} %{size_download}"


def fetch(lab: Lab, url: str) -> tuple[int, int]:
    """GET ``url`` from pod1; (client port, header + body bytes received)."""
    out = lab.exec("pod1", "curl", "-s", "--noproxy", "*", "-m", "5", "-o", "/dev/null",
                   "-w", CURL_STATS, url).stdout.split()
    assert out[0] == "200", out
    return int(out[1]), int(out[2]) + int(out[3])


def find(snap: Snapshot, **where: Any) -> dict[str, Any]:
    hits: list[dict[str, Any]] = [r for r in snap.entries.to_pylist()
                                  if all(r[k] == v for k, v in where.items())]
    assert len(hits) == 1, (where, snap.entries.to_pylist())
    return hits[0]


@pytest.mark.netns
def test_real_traffic_snapshots(netns_lab: Lab) -> None:  # noqa: F811
    lab = netns_lab
    lab.conntrack_flush()
    empty = parse_conntrack(lab.conntrack("-L"), source="node-0", time=datetime.now(UTC))
    http, http_size = fetch(lab, HTTP_POD2)
    ext, _ = fetch(lab, "http://203.0.113.10/")
    dns_port, query, answer = map(int, lab.python("pod1", DNS_QUERY).split())
    ident = os.getpid() % 65536
    assert lab.python("pod1", PING, str(ident), "10.244.1.12").strip() == "84"
    first = parse_conntrack(lab.conntrack("-L", "-o", "extended,id,ktimestamp"),
                            source="node-1", time=datetime.now(UTC))
    time.sleep(0.1)
    again, _ = fetch(lab, HTTP_POD2)
    second = parse_conntrack(lab.exec("node", "cat", "/proc/net/nf_conntrack").stdout,
                             source="node-2", time=datetime.now(UTC))
    assert first.rejects == [] and second.rejects == []

    web = find(first, proto=6, orig_src_port=http)
    assert (web["orig_src_ip"], web["orig_dst_ip"], web["orig_dst_port"], web["reply_src_ip"],
            web["reply_src_port"], web["reply_dst_port"], web["assured"]) == (
        "10.244.1.11", "10.244.1.12", 8080, "10.244.1.12", 8080, http, True)
    assert web["reply_bytes"] >= http_size + 20 * web["reply_packets"] and web["orig_packets"] >= 4
    assert web["ct_id"] is not None and web["start"] is not None
    assert find(first, proto=6, orig_src_port=ext)["reply_src_ip"] == "203.0.113.10"
    dns = find(first, proto=17, orig_src_port=dns_port)
    assert (dns["orig_dst_ip"], dns["orig_dst_port"], dns["orig_packets"], dns["orig_bytes"],
            dns["reply_packets"], dns["reply_bytes"]) == (
        "10.244.1.13", 53, 1, 20 + 8 + query, 1, 20 + 8 + answer)  # IP + UDP + DNS
    ping = find(first, proto=1, icmp_id=ident)
    assert (ping["icmp_type"], ping["icmp_code"], ping["orig_bytes"], ping["reply_bytes"]) == (
        8, 0, 84, 84)

    # Any interval: with the empty table as baseline, first sight is the start.
    table = pl.DataFrame(segments([first, second], interval=1, previous=empty))
    per_conn = table.group_by("src_port", "proto").agg(
        pl.col("bytes_rev").sum(), pl.col("started").sum(), pl.col("completed").sum())
    total = per_conn.filter(pl.col("src_port") == http).row(0, named=True)
    final = find(second, proto=6, orig_src_port=http)
    assert (total["bytes_rev"], total["started"], total["completed"]) == (
        final["reply_bytes"], 1, 1)  # deltas add up to the last counter; TIME_WAIT completes
    assert per_conn.filter(pl.col("src_port") == again)["started"].to_list() == [1]


@pytest.mark.netns
def test_real_dnat_to_a_cluster_ip(netns_lab: Lab) -> None:  # noqa: F811
    lab = netns_lab
    table = f"tfct{os.getpid()}"
    lab.exec("node", "nft", f"add table ip {table}; add chain ip {table} svc {{ type nat hook "
             "prerouting priority -100; policy accept; }; "
             f"add rule ip {table} svc ip daddr 10.96.0.50 tcp dport 80 "
             "dnat to 10.244.1.12:8080")
    try:
        port, _ = fetch(lab, "http://10.96.0.50/")
        snap = parse_conntrack(lab.conntrack("-L", "-o", "extended"), source="node",
                               time=datetime.now(UTC))
    finally:
        lab.exec("node", "nft", "delete", "table", "ip", table)
    seg = pl.DataFrame(segments([snap])).filter(pl.col("src_port") == port).row(0, named=True)
    assert (seg["src_ip"], seg["dst_ip"], seg["dst_port"], seg["orig_dst_ip"],
            seg["orig_dst_port"]) == ("10.244.1.11", "10.244.1.12", 8080, "10.96.0.50", 80)
    assert seg["packets_fwd"] > 0 and seg["bytes_rev"] > 0
