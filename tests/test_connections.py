"""Connection rebuilding: initiator, intervals, started/completed, SYN reuse, timeouts.

Rows are compared as ``brief`` tuples: (interval start, conn_id, conn_start, proto, src,
sport, dst, dport, packets/bytes fwd, packets/bytes rev, started, completed), times in µs
after ``T0``.
"""

from __future__ import annotations

import numpy as np
import pytest
from pcap_samples import T0, brief, eth, pcap, read_all, tcp, udp

from ingest.connections import flow_hash, flow_order
from ingest.pcap import Timeouts

S = 1_000_000  # one second in µs
C, SV = "10.0.0.1", "10.0.0.2"


def out(flags: str, payload: bytes = b"", sport: int = 40000) -> bytes:
    return eth(tcp(C, SV, sport, 80, flags, payload))


def back(flags: str, payload: bytes = b"", dport: int = 40000) -> bytes:
    return eth(tcp(SV, C, 80, dport, flags, payload))


def rows(records: list[tuple[int, bytes]], **kwargs: object) -> list[tuple[object, ...]]:
    got = read_all(pcap([(T0 + t, f) for t, f in records]), **kwargs)
    assert got.rejects == []
    return [brief(r) for r in got.segments]


def test_tcp_connection_from_syn_to_fin_is_started_and_completed() -> None:
    assert rows([(0, out("S")), (100, back("SA")), (200, out("A")), (300, out("PA", b"x" * 60)),
                 (400, back("A")), (500, back("PA", b"y" * 500)), (600, out("FA")),
                 (700, back("FA")), (800, out("A"))]) == [
        (0, 0, 0, 6, C, 40000, SV, 80, 5, 260, 4, 660, True, True)]


def test_midstream_tcp_names_the_first_sender_and_is_not_started() -> None:
    assert rows([(0, back("PA", b"z" * 10)), (50, out("A"))]) == [
        (0, 0, 0, 6, SV, 80, C, 40000, 1, 50, 1, 40, False, False)]


def test_synack_first_makes_its_receiver_the_initiator() -> None:
    assert rows([(0, back("SA")), (50, out("A"))]) == [
        (0, 0, 0, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, False)]


def test_rows_per_interval_include_quiet_intervals() -> None:
    got = rows([(10 * S, out("S")), (11 * S, back("SA")), (130 * S, out("FA")),
                (131 * S, back("FA"))], interval=60)
    assert got == [(0, 0, 10 * S, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, False),
                   (60 * S, 0, 10 * S, 6, C, 40000, SV, 80, 0, 0, 0, 0, False, False),
                   (120 * S, 0, 10 * S, 6, C, 40000, SV, 80, 1, 40, 1, 40, False, True)]


def test_syn_after_fin_both_ways_is_a_new_connection() -> None:
    got = rows([(0, out("S")), (1, back("SA")), (2, out("FA")), (3, back("FA")), (4, out("A")),
                (5 * S, out("S")), (5 * S + 1, back("SA"))])
    assert got == [(0, 0, 0, 6, C, 40000, SV, 80, 3, 120, 2, 80, True, True),
                   (0, 1, 5 * S, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, False)]


def test_syn_after_fin_one_way_is_a_retransmission() -> None:
    got = rows([(0, out("S")), (1, back("SA")), (2, out("FA")), (5 * S, out("S"))])
    assert got == [(0, 0, 0, 6, C, 40000, SV, 80, 3, 120, 1, 40, True, False)]


def test_rst_completes_a_connection() -> None:
    assert rows([(0, out("S")), (1, back("RA"))]) == [
        (0, 0, 0, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, True)]


def test_tcp_after_fin_and_closing_timeout_is_a_new_connection() -> None:
    got = rows([(0, out("S")), (1, back("FA")), (121 * S, back("A"))])
    assert got == [(0, 0, 0, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, False),
                   (0, 1, 121 * S, 6, SV, 80, C, 40000, 1, 40, 0, 0, False, False)]


def test_idle_established_tcp_stays_one_connection() -> None:
    got = rows([(0, out("S")), (1, back("SA")), (1000 * S, out("A"))], interval=600)
    assert got == [(0, 0, 0, 6, C, 40000, SV, 80, 1, 40, 1, 40, True, False),
                   (600 * S, 0, 0, 6, C, 40000, SV, 80, 1, 40, 0, 0, False, False)]


def q(t: int) -> tuple[int, bytes]:
    return t, eth(udp(C, SV, 5000, 9999, b"q"))


def a(t: int) -> tuple[int, bytes]:
    return t, eth(udp(SV, C, 9999, 5000, b"aa"))


def test_unanswered_udp_splits_after_30s_and_the_first_completes() -> None:
    got = rows([q(0), q(20 * S), q(51 * S)])
    assert got == [(0, 0, 0, 17, C, 5000, SV, 9999, 2, 58, 0, 0, True, True),
                   (0, 1, 51 * S, 17, C, 5000, SV, 9999, 1, 29, 0, 0, True, False)]


def test_answered_udp_uses_the_stream_timeout() -> None:
    got = rows([q(0), a(1), q(100 * S), a(100 * S + 1), q(221 * S)])
    assert got == [(0, 0, 0, 17, C, 5000, SV, 9999, 2, 58, 2, 60, True, True),
                   (0, 1, 221 * S, 17, C, 5000, SV, 9999, 1, 29, 0, 0, True, False)]


def test_udp_completes_when_the_capture_runs_past_its_timeout() -> None:
    other = eth(udp("10.9.9.9", SV, 1, 2))
    got = rows([q(0), a(1), (121 * S, other)])
    assert got[0] == (0, 0, 0, 17, C, 5000, SV, 9999, 1, 29, 1, 30, True, True)


def test_custom_timeouts() -> None:
    got = rows([q(0), q(6 * S)], timeouts=Timeouts(udp=5))
    assert [r[1:3] for r in got] == [(0, 0), (1, 6 * S)]


def test_earlier_timestamps_count_at_the_latest_time_seen() -> None:
    got = rows([(299 * S, out("S")), (301 * S, back("SA")), (250 * S, out("A"))])
    assert got == [(0, 0, 299 * S, 6, C, 40000, SV, 80, 1, 40, 0, 0, True, False),
                   (300 * S, 0, 299 * S, 6, C, 40000, SV, 80, 1, 40, 1, 40, False, False)]


def test_conn_ids_follow_first_packet_order() -> None:
    got = rows([(0, out("S", sport=2)), (1, out("S", sport=1)), (2, out("S", sport=3))])
    assert [(r[1], r[5]) for r in got] == [(0, 2), (1, 1), (2, 3)]


@pytest.mark.parametrize("chunk_bytes", [4096, 64 << 20])
def test_connection_crossing_chunks_keeps_id_and_counters(chunk_bytes: int) -> None:
    filler = [(10 + i, eth(udp("10.1.0.1", "10.1.0.2", 1000 + i, 53, b"x" * 60)))
              for i in range(200)]
    records = [(0, out("S")), *filler, (400, back("SA")), (401, out("FA")), (402, back("FA"))]
    got = read_all(pcap([(T0 + t, f) for t, f in records]), chunk_bytes=chunk_bytes)
    tcp_rows = [brief(r) for r in got.segments if r["proto"] == 6]
    assert tcp_rows == [(0, 0, 0, 6, C, 40000, SV, 80, 2, 80, 2, 80, True, True)]
    assert sorted(r["conn_id"] for r in got.segments) == list(range(201))


def test_flow_order_groups_exactly_even_when_hashes_collide() -> None:
    rng = np.random.default_rng(1)
    keys = {"pv": np.full(50, 6, np.int32), "a_hi": np.zeros(50, np.uint64),
            "a_lo": rng.integers(1, 4, 50).astype(np.uint64), "b_hi": np.zeros(50, np.uint64),
            "b_lo": np.full(50, 9, np.uint64), "pa": rng.integers(1, 3, 50).astype(np.int32),
            "pb": np.full(50, 80, np.int32)}
    order, starts = flow_order(keys, flow_hash(keys))
    forced, forced_starts = flow_order(keys, np.zeros(50, np.uint64))  # every hash collides
    groups = {tuple(int(keys[k][i]) for k in ("a_lo", "pa")) for i in order[starts]}
    assert len(groups) == int(starts.sum()) == int(forced_starts.sum())
    for o, s in ((order, starts), (forced, forced_starts)):
        flow = np.cumsum(s) - 1
        for g in range(int(s.sum())):
            members = o[flow == g]
            assert len({(int(keys["a_lo"][i]), int(keys["pa"][i])) for i in members}) == 1
            assert list(members) == sorted(members)  # time order kept inside a flow
