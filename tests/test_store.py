"""The Parquet store: layout, atomic commits, exactly-once positions, recovery, the lock,
rejects and compaction — with real files, real Parquet and real DuckDB reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.db import QueryError, connect, query
from ingest.compact import compact_store
from ingest.schema import FLOWS, SCHEMA_VERSION, Reject, conform
from ingest.store import Store, StoreError

T0 = datetime(2026, 11, 27, 10, 58, tzinfo=UTC)


def flows(n: int, start: datetime = T0, marker: int = 0, step: int = 60) -> pa.Table:
    """``n`` flow records one ``step`` apart; ``bytes_in`` carries ``marker`` to trace them."""
    rows = [{
        "start_time": start + timedelta(seconds=i * step),
        "end_time": start + timedelta(seconds=i * step + 300),
        "source_name_aggr": "frontend-864f4fcdfd-*", "source_namespace": "storefront",
        "source_type": "wep", "source_name": "-", "dest_name": "-",
        "dest_name_aggr": "pub", "dest_namespace": "-", "dest_type": "net", "dest_port": 443,
        "source_labels": [("app", "frontend")], "dest_domains": ["api.twilio.com"],
        "proto": "tcp", "action": "allow", "reporter": "src", "bytes_in": marker,
        "bytes_out": i, "packets_in": 1, "packets_out": 1, "num_flows": 1,
        "num_flows_started": 1, "num_flows_completed": 0, "host": "node-1",
        "collector": "calico",
        "enforced_policies": ["0|__PROFILE__|__PROFILE__.kns.storefront|allow|0"],
    } for i in range(n)]
    return pa.Table.from_pylist(rows, schema=FLOWS)


def markers(store: Store) -> list[int]:
    if not store.files():
        return []
    return sorted(pq.read_table(store.files()).column("bytes_in").to_pylist())


def test_layout_partitions_by_hour_with_schema_and_zstd(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer() as w:
        w.add_flows(flows(4, marker=7), host="node-1")  # 10:58, 10:59, 11:00, 11:01
        w.commit()
    rel = sorted(str(p.relative_to(tmp_path)).rsplit("/", 1)[0] for p in store.files())
    assert rel == ["flows/date=2026-11-27/hour=10", "flows/date=2026-11-27/hour=11"]
    assert all(p.name.startswith("part-node-1-") for p in store.files())
    meta = pq.ParquetFile(store.files()[0])
    assert meta.metadata.row_group(0).column(0).compression == "ZSTD"
    schema = meta.schema_arrow
    assert schema.metadata[b"tierflow.schema_version"] == SCHEMA_VERSION.encode()
    # Parquet has no seconds unit: the times come back as milliseconds, same instants.
    assert schema.field("start_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.names == FLOWS.names
    assert [f.type for f in schema][2:] == [f.type for f in FLOWS][2:]
    assert not list((tmp_path / "_staging").iterdir())
    assert not list((tmp_path / "_state" / "journal").iterdir())


def test_round_trip_is_lossless_and_duckdb_reads_it(tmp_path: Path) -> None:
    table = flows(3, marker=5)
    store = Store(tmp_path)
    with store.writer() as w:
        w.add_flows(table)
        w.commit()
    back = pq.read_table(store.files()).sort_by("bytes_out")
    assert conform(back).to_pylist() == table.to_pylist()
    con = connect(tmp_path)
    got = query(con, "SELECT count(*) AS n, sum(bytes_out) AS b, any_value(source_labels['app'])"
                     " AS app, min(hour) AS h FROM flows WHERE dest_port = ?", [443]).to_pylist()
    assert got == [{"n": 3, "b": 3, "app": "frontend", "h": 10}]


def test_sql_is_read_only_and_offline(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer() as w:
        w.add_flows(flows(1))
        w.commit()
    con = connect(tmp_path)
    with pytest.raises(QueryError, match="Permission Error"):
        query(con, f"COPY flows TO '{tmp_path}/flows/leak.csv'")
    with pytest.raises(QueryError, match="Permission Error"):
        query(con, "SELECT * FROM read_csv('/etc/hostname')")
    with pytest.raises(QueryError):
        query(con, "INSTALL httpfs")
    assert [p.name for p in (tmp_path / "flows").iterdir()] == ["date=2026-11-27"]


def test_empty_store_has_an_empty_flows_view(tmp_path: Path) -> None:
    with Store(tmp_path).writer():
        pass
    assert query(connect(tmp_path), "SELECT count(*) AS n FROM flows").to_pylist() == [{"n": 0}]


def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer() as w:
        w.add_flows(flows(2))
        assert store.files() == []
        w.abort()
        w.commit()
    assert store.files() == []
    assert not list((tmp_path / "_staging").iterdir())


def test_positions_follow_content_through_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    log.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    store = Store(tmp_path / "store")
    with store.writer() as w:
        pos = w.position(log)
        assert (pos.key, pos.offset) == (None, 0)
        w.set_position(log, pos, 9)
        w.commit()
    with store.writer() as w:
        assert w.position(log).offset == 9
    log.rename(tmp_path / "flows.log.1")  # rotation: the same content under a new name
    log.write_bytes(b'{"b": 1}\n')
    with store.writer() as w:
        assert w.position(tmp_path / "flows.log.1").offset == 9
        assert w.position(log).offset == 0
    with open(tmp_path / "flows.log.1", "ab") as f:  # growing past the recorded head
        f.write(b"x" * 5000 + b"\n")
    with store.writer() as w:
        assert w.position(tmp_path / "flows.log.1").offset == 9
    (tmp_path / "flows.log.1").write_bytes(b'{"a"')  # truncated in place: start over
    with store.writer() as w:
        assert w.position(tmp_path / "flows.log.1").offset == 0


def test_rejects_are_kept_with_where_and_why(tmp_path: Path) -> None:
    store = Store(tmp_path)
    bad = [Reject("flows.log", "line 3 (byte 120)", "action", "alow", "allow or deny", "{..}"),
           Reject("c.pcap", "packet 9 at byte 800", "caplen", "70000", "at most 65535",
                  b"\x00\xff")]
    with store.writer() as w:
        w.add_rejects("calico", bad)
        w.commit()
    files = list((tmp_path / "rejects" / "calico").rglob("*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert lines[0]["message"] == ("flows.log: line 3 (byte 120): action: alow "
                                   "(expected allow or deny)")
    assert lines[0]["raw"] == "{..}"
    assert lines[1]["raw_base64"] == "AP8="


@pytest.mark.parametrize("crash_after", range(6))
def test_a_crash_at_any_rename_loses_and_doubles_nothing(tmp_path: Path, crash_after: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash at each of the second commit's six renames (journal, two flows files and their
    two hourly rollups, sources):
    the next writer rolls the commit forward or discards it, never half of it."""
    store = Store(tmp_path)
    src = tmp_path / "src.log"
    src.write_bytes(b"0123456789")
    with store.writer() as w:
        w.add_flows(flows(1, marker=1))
        w.set_position(src, w.position(src), 4)
        w.commit()
    calls = {"n": 0}
    real = os.replace

    def crashing(a: object, b: object) -> None:
        if calls["n"] == crash_after:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr("ingest.store.os.replace", crashing)
    with pytest.raises(KeyboardInterrupt), store.writer() as w:
        w.add_flows(flows(2, marker=2, start=T0 + timedelta(hours=2), step=3600))
        w.set_position(src, w.position(src), 10)
        w.commit()
    monkeypatch.setattr("ingest.store.os.replace", real)
    with store.writer() as w2:
        offset = w2.position(src).offset
    got = markers(store)
    assert (got, offset) in [([1], 4), ([1, 2, 2], 10)]
    # every flows file has its hourly rollup, and no rollup outlives its file
    assert [p.relative_to(tmp_path / "rollups" / "hits") for p in store.rollup_files()] == \
        [p.relative_to(tmp_path / "flows") for p in store.files()]
    assert not list((tmp_path / "_staging").iterdir())
    assert not list((tmp_path / "_state" / "journal").iterdir())


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.test_store import flows
    from ingest.store import Store
    store, src = Store(sys.argv[1]), Path(sys.argv[2])
    with store.writer() as w:
        for i in range(w.position(src).offset, 10_000):
            w.add_flows(flows(3, marker=i))
            w.set_position(src, w.position(src), i + 1)
            w.commit()
            print(i, flush=True)
""")


def test_kill_9_mid_write_then_rerun_lands_every_batch_exactly_once(tmp_path: Path) -> None:
    """A real process killed with SIGKILL at arbitrary moments, re-run until done: every
    batch is in the store exactly once and the position says so."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"\0" * 10_000)
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(Path(__file__).parents[1])))
    store, target = tmp_path / "store", 40
    kills = 0
    for delay in (0.0, 0.05, 0.11, 0.02, 0.17, 0.08):
        p = subprocess.Popen([sys.executable, str(script), str(store), str(src)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.readline()  # it has committed a batch: now kill it somewhere in the next
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        kills += 1
        with Store(store).writer() as w:
            done = w.position(src).offset
        got = markers(Store(store))
        assert got == sorted(m for m in range(done) for _ in range(3))
        if done >= target:
            break
    assert kills >= 2 and done > 0


def test_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    store = Store(tmp_path)
    order: list[str] = []
    with store.writer():
        with pytest.raises(StoreError, match="another tierflow job holds the store lock"), \
                store.writer(wait=0.2):
            pass

        def second() -> None:
            with store.writer(wait=10):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"]


def test_compaction_merges_small_files_without_changing_results(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(5):
        with store.writer() as w:
            w.add_flows(flows(3, marker=i))  # 10:58-11:00: two hour partitions per batch
            w.commit()
    sql = ("SELECT hour, count(*) AS n, sum(bytes_in) AS m, sum(bytes_out) AS b FROM flows "
           "GROUP BY ALL ORDER BY hour")
    before = query(connect(tmp_path), sql).to_pylist()
    assert len(store.files()) == 10
    result = compact_store(store)
    assert (result.partitions, result.files_before, result.files_after, result.rows) == \
        (2, 10, 2, 15)
    assert len(store.files()) == 2
    assert query(connect(tmp_path), sql).to_pylist() == before
    assert compact_store(store).partitions == 0  # idempotent
