"""The conntrack source's interval logic (ingest/live.py), on scripted events and dumps:
what each interval reports for short, long-lived, pre-existing, DNATed, evicted and vanished
connections. The real kernel path is tests/test_agent.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ingest.ctnetlink import Entry
from ingest.live import ConntrackSource

S = 1_000_000  # microseconds per second
T0 = 1_800_000_000 * S  # an interval boundary (15 s intervals)


def entry(sport: int, counters: tuple[int, int, int, int] = (0, 0, 0, 0), *,
          kind: str = "entry", state: int | None = 3, start_s: float | None = None,
          dst: tuple[str, int] = ("10.0.0.2", 8080),
          reply: tuple[str, int] | None = None) -> Entry:
    rsrc, rport = reply or dst
    return Entry(kind, 1000 + sport, 4, 6, "10.0.0.1", dst[0], sport, dst[1], rsrc,
                 "10.0.0.1", rport, sport, None, None, *counters, state, 0,
                 None if start_s is None else int(start_s * 1e9), None)


class Scripted:
    """Events and dumps the test hands out, one batch per call."""

    def __init__(self) -> None:
        self.events: list[Entry] = []
        self.table: list[Entry] = []
        self.lost = 0

    def read(self) -> list[Entry]:
        out, self.events = self.events, []
        return out

    def fileno(self) -> int:
        return -1

    def dump(self, _netns: Any) -> list[Entry]:
        return list(self.table)


@pytest.fixture
def kernel() -> Scripted:
    return Scripted()


def source(kernel: Scripted, **kw: Any) -> ConntrackSource:
    return ConntrackSource(None, dump=kernel.dump, events=kernel, **kw)


def interval(src: ConntrackSource, k: int) -> list[dict[str, Any]]:
    rows = src.collect(T0 + k * 15 * S, T0 + (k + 1) * 15 * S).to_pylist()
    return [{key: r[key] for key in ("src_port", "packets_fwd", "bytes_fwd", "packets_rev",
                                     "bytes_rev", "started", "completed")} for r in rows]


def test_a_short_connection_is_reported_once_with_its_final_counters(kernel: Scripted) -> None:
    src = source(kernel)
    kernel.events = [entry(1, kind="new"), entry(1, (6, 400, 6, 900), kind="destroy")]
    assert interval(src, 0) == [{"src_port": 1, "packets_fwd": 6, "bytes_fwd": 400,
                                 "packets_rev": 6, "bytes_rev": 900, "started": True,
                                 "completed": True}]
    assert interval(src, 1) == []


def test_a_long_lived_connection_reports_its_increase_while_active(kernel: Scripted) -> None:
    src = source(kernel)
    kernel.events = [entry(2, kind="new")]
    kernel.table = [entry(2, (5, 500, 4, 400))]
    assert interval(src, 0) == [{"src_port": 2, "packets_fwd": 5, "bytes_fwd": 500,
                                 "packets_rev": 4, "bytes_rev": 400, "started": True,
                                 "completed": False}]
    kernel.table = [entry(2, (8, 800, 6, 600))]
    assert interval(src, 1) == [{"src_port": 2, "packets_fwd": 3, "bytes_fwd": 300,
                                 "packets_rev": 2, "bytes_rev": 200, "started": False,
                                 "completed": False}]
    assert interval(src, 2) == []  # idle: nothing to report
    kernel.table = [entry(2, (9, 852, 7, 652), state=7)]  # FIN exchanged: TIME_WAIT
    assert interval(src, 3) == [{"src_port": 2, "packets_fwd": 1, "bytes_fwd": 52,
                                 "packets_rev": 1, "bytes_rev": 52, "started": False,
                                 "completed": True}]
    kernel.table = []
    kernel.events = [entry(2, (9, 852, 7, 652), kind="destroy", state=7)]
    assert interval(src, 4) == []  # completed already, nothing new
    assert (src.vanished, src.evicted) == (0, 0)


def test_connections_open_before_the_agent_started_are_not_started(kernel: Scripted) -> None:
    src = source(kernel)
    start_inside = (T0 + 3 * S) / S
    kernel.table = [entry(3, (1, 60, 1, 60), start_s=T0 / S - 600),
                    entry(4, (1, 60, 1, 60), start_s=start_inside),
                    entry(5, (1, 60, 1, 60))]
    got = {r["src_port"]: r["started"] for r in interval(src, 0)}
    assert got == {3: False, 4: True, 5: False}


def test_dnat_keeps_the_service_address_and_names_the_real_responder(
        kernel: Scripted) -> None:
    src = source(kernel)
    kernel.table = [entry(6, (3, 180, 3, 200), dst=("10.96.0.10", 80),
                          reply=("10.0.0.7", 8080))]
    [row] = src.collect(T0, T0 + 15 * S).to_pylist()
    assert (row["dst_ip"], row["dst_port"], row["orig_dst_ip"], row["orig_dst_port"]) == (
        "10.0.0.7", 8080, "10.96.0.10", 80)


def test_memory_is_bounded_and_losses_are_counted(kernel: Scripted) -> None:
    src = source(kernel, max_connections=2)
    kernel.events = [entry(p, kind="new") for p in (7, 8, 9)]
    src.poll()
    assert (len(src.conns), src.evicted) == (2, 1)
    kernel.table = [entry(8, (2, 100, 2, 100)), entry(9, (2, 100, 2, 100))]
    interval(src, 0)
    kernel.table = [entry(9, (2, 100, 2, 100))]  # 8 gone, its DESTROY never came
    [row] = interval(src, 1)
    assert row["src_port"] == 8 and row["completed"] and row["packets_fwd"] == 0
    assert src.vanished == 1


def test_a_reused_tuple_with_a_new_id_is_a_new_connection(kernel: Scripted) -> None:
    src = source(kernel)
    kernel.table = [entry(10, (4, 240, 4, 240))]
    interval(src, 0)
    again = replace(entry(10, (1, 60, 0, 0)), id=99)
    kernel.events = [replace(again, kind="new")]
    kernel.table = [again]
    rows = interval(src, 1)
    # The new one starts; the old one is gone without a DESTROY event: it completes, empty.
    assert [(r["packets_fwd"], r["started"], r["completed"]) for r in rows] == [
        (1, True, False), (0, False, True)]
    assert src.vanished == 1


def test_a_connection_that_began_after_the_interval_ended_waits_for_the_next(
        kernel: Scripted) -> None:
    # The dump runs a little after the boundary; what began since is the next interval's.
    src = source(kernel)
    kernel.table = [entry(20, (6, 400, 6, 900), state=7, start_s=(T0 + 15 * S) / S + 0.01)]
    assert interval(src, 0) == []
    assert interval(src, 1) == [{"src_port": 20, "packets_fwd": 6, "bytes_fwd": 400,
                                 "packets_rev": 6, "bytes_rev": 900, "started": True,
                                 "completed": True}]


class DeletedDuringDump(Scripted):
    """A kernel whose entries are deleted while the table is being dumped."""

    def __init__(self, deleted: list[Entry]) -> None:
        super().__init__()
        self.deleted = deleted

    def dump(self, netns: Any) -> list[Entry]:
        self.events += self.deleted  # their DESTROY events, queued behind the dump
        self.deleted = []
        return super().dump(netns)


def test_an_entry_deleted_during_the_dump_ends_by_its_destroy_event() -> None:
    kernel = DeletedDuringDump([entry(21, (6, 400, 6, 900), kind="destroy", state=7)])
    src = source(kernel)
    kernel.events = [entry(21, kind="new")]
    assert interval(src, 0) == [{"src_port": 21, "packets_fwd": 6, "bytes_fwd": 400,
                                 "packets_rev": 6, "bytes_rev": 900, "started": True,
                                 "completed": True}]
    assert src.vanished == 0


def test_a_destroy_event_alone_starts_what_began_since_the_first_interval(
        kernel: Scripted) -> None:
    # Its NEW event was lost, or it began before the agent: the kernel start time says.
    src = source(kernel)
    kernel.events = [entry(22, (1, 60, 1, 60), kind="destroy", start_s=T0 / S - 100),
                     entry(23, (1, 60, 1, 60), kind="destroy", start_s=T0 / S + 1)]
    assert {r["src_port"]: r["started"] for r in interval(src, 0)} == {22: False, 23: True}
