"""Hourly hit rollups: the board read from rollups (whole hours) plus records (edge hours)
equals the board read from the records alone, for any window; compaction keeps them in step."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from analytics import queries
from analytics.db import connect
from analytics.window import Window
from ingest.compact import compact_store
from ingest.schema import FLOWS
from ingest.store import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HITS = ["security|security.pass|pass|0", "platform|platform.pass|pass|0",
        "default|shop/default.web|allow|1", "default|shop/default.web|deny|-1",
        "default|shop/default.staged:web|allow|0", "__PROFILE__|__PROFILE__.kns.shop|allow|0"]


def records(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        start = T0 + timedelta(minutes=5 * rng.randrange(0, 48))  # four hours
        enforced = [f"{i}|{h}" for i, h in enumerate(rng.sample(HITS, rng.randint(1, 4)))]
        pending = [f"{i}|{h}" for i, h in enumerate(rng.sample(HITS, rng.randint(0, 4)))]
        rows.append({
            "start_time": start, "end_time": start + timedelta(minutes=5),
            "reporter": rng.choice(["src", "dst"]), "action": rng.choice(["allow", "deny"]),
            "source_type": "wep", "source_namespace": "shop", "source_name_aggr": "web-*",
            "packets_in": rng.randint(0, 50), "packets_out": rng.randint(0, 50),
            "bytes_in": rng.randint(0, 5000), "bytes_out": rng.randint(0, 5000),
            "num_flows": rng.randint(1, 5), "num_flows_started": 1, "num_flows_completed": 1,
            "enforced_policies": enforced, "pending_policies": pending or None,
        })
    return pa.Table.from_pylist(rows, schema=FLOWS)


def write(store: Store, batches: list[pa.Table]) -> None:
    for table in batches:
        with store.writer() as w:
            w.add_flows(table, "node")
            w.commit()


WINDOWS = [
    Window(),
    Window(T0 + timedelta(hours=1), T0 + timedelta(hours=3)),  # two whole hours
    Window(T0 + timedelta(minutes=50), T0 + timedelta(hours=2, minutes=7)),  # ragged edges
    Window(T0 + timedelta(minutes=61)),  # open end
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_board_from_rollups_equals_board_from_records(tmp_path: Path, seed: int) -> None:
    store = Store(tmp_path / "store")
    write(store, [records(300, seed), records(200, seed + 100)])
    with_rollups = [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS]
    shutil.rmtree(store.root / "rollups")
    without = [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS]
    assert with_rollups == without
    assert all(rows for rows in without)


def test_rollups_are_used_for_whole_hours_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    write(store, [records(100, 7)])
    con = connect(store.root)
    queries.board(con, WINDOWS[1])
    used = con.sql("SELECT count(DISTINCT hour) FROM board_rollups").fetchall()
    edges = con.sql("SELECT count(*) FROM board_flows WHERE start_time >= ? AND start_time < ?",
                    params=[T0 + timedelta(hours=1), T0 + timedelta(hours=3)]).fetchall()
    assert (used, edges) == ([(2,)], [(0,)])
    # an hour with a file lacking its rollup is read from the records
    next((store.root / "rollups" / "hits").rglob("*.parquet")).unlink()
    con = connect(store.root)
    queries.board(con, Window())
    assert con.sql("SELECT count(DISTINCT hour) FROM board_rollups").fetchall()[0][0] == 3


def test_compaction_keeps_rollups_in_step(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    write(store, [records(100, 8), records(100, 9), records(100, 10)])
    before = [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS]
    compact_store(store)
    assert [p.name for p in store.rollup_files()] == [p.name for p in store.files()]
    assert len(store.files()) == 4
    assert [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS] == before


def test_compaction_gives_a_rollup_to_a_file_without_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    write(store, [records(100, 11)])
    before = [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS]
    lost = store.rollup_files()[0]  # as in a store written before rollups existed
    lost.unlink()
    result = compact_store(store)
    assert result.partitions == 1 and result.files_before == result.files_after == 1
    assert [p.name for p in store.rollup_files()] == [p.name for p in store.files()]
    assert [queries.board(connect(store.root), w).to_pylist() for w in WINDOWS] == before
    assert compact_store(store).partitions == 0  # compacting a compacted store does nothing
