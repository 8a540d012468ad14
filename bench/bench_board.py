"""The Policies Board over a day of flow records: tierflow (DuckDB over the store) against the
same board computed by pandas and by Polars, on 2 cores, with each one's peak memory.

The store is generated (vectorised) and written through ``ingest.store.Store(...).writer()``,
one hour per ``add_flows`` + ``commit``, so its files are what ingest writes (zstd Parquet,
``flows/date=/hour=`` partitions, 256 Ki-row row groups). ``--rows`` records (default 20
million) cover 24 h of 5-minute intervals: level-2 aggregated records (IPs null, names
``-``), src- and dst-reported, between 3,000 workloads (``web-0042-5f8d7c6b9f-*``) in 100
namespaces. Each record's enforced trace has up to 5 hits from ~560 policies (a security tier
passing or denying, a platform tier passing or allowing DNS, a compliance tier, a tenants tier
with one policy per namespace, then three Calico policies and a Kubernetes policy per
namespace, end-of-tier denies, and the profile for the 10 namespaces without policy); ~10% of
records are denied. The pending trace equals the enforced one for 90% of records; the rest
see a staged policy: a staged tier between security and platform (every later hit moves one
position down, so the same rule sits at different positions in the two traces) or a staged
deny replacing the final allow. The store is kept in ``--store`` (default a directory in the
system temp dir named after the row count) and reused while its row count is right.

Each approach runs in its own process, pinned to 2 CPUs, ``--repeat`` times (fastest kept,
fewer runs once ``--budget`` seconds are spent); peak memory is the process's ``VmHWM``
(interpreter and libraries included; the RSS after imports is shown beside it). The bench
asserts that the boards are the same — rows, counters, first/last hit — so a wrong peer
cannot look fast. The whole window (24 h):

* tierflow as shipped: ``analytics.queries.board(analytics.db.connect(store, threads=2,
  memory_limit="1GB"), Window())``: whole hours come from the hourly hit rollups that the
  store's writer keeps beside the records (``ingest/rollups.py``);
* tierflow ``board.sql`` over every record (no rollups): what a store written before rollups
  costs, and what the edge hours of any window cost per hour. It sums the records per
  distinct (reporter, enforced, pending) trace first, then strips, deduplicates and unnests
  each trace once (f7173e3, proposed by this bench);
* the old ``board.sql`` (``per_record_sql``: the same without that ``traces`` step, every
  record's lists taken apart), run as a query string on the same connection;
* pandas: per row group, pyarrow reads the columns, pandas explodes the traces (Arrow-backed
  lists and strings), strips the positions (rules as a categorical), drops duplicate (record,
  rule) pairs and sums per (rule, reporter); the partial sums are added up, parsed, pivoted;
* polars: one lazy query (scan, ``list.eval`` strip + ``list.unique``, explode, group by)
  collected with the streaming engine, then parsed and pivoted.

And a window of 00:30-23:30, whose 2 edge hours are read from the records: tierflow as shipped
against the old ``board.sql`` over the same rollups and records. Then ``EXPLAIN ANALYZE`` of
both queries over every record, per operator.

Rules are parsed with ``policy.hits.parse_hit`` once per distinct rule in the peers (a few
thousand strings): the per-record work is what is measured.

Usage: ``python bench/bench_board.py [--rows 20000000] [--store DIR] [--repeat 3]
[--out bench/results/board.txt]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from analytics import queries
from analytics.db import connect, parquet_view, query, sql_text
from analytics.window import Window
from ingest.rollups import HITS
from ingest.schema import FLOWS
from ingest.store import Store
from policy.hits import parse_hit

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
MEMORY_LIMIT = "1GB"

# -- the generated store -------------------------------------------------------------------

DAY0 = datetime(2026, 11, 26, tzinfo=UTC)
INTERVAL = 300  # Felix's default flowLogsFlushInterval for the aggregated logs
INTERVALS = 24 * 3600 // INTERVAL
NAMESPACES = 100
UNPROTECTED = 10  # the last 10 team namespaces have no policy: their traffic hits the profile
PER_NAMESPACE = 30
WORKLOADS = NAMESPACES * PER_NAMESPACE  # + coredns in kube-system
PAIRS = 60_000  # (source, destination) workload pairs that talk
APPS = ("web", "api", "worker", "cache", "db", "auth", "search", "billing", "cart", "ui")
PORTS = (8080, 8443, 9090, 6379, 5432, 8080, 9200, 8080, 8080, 3000)
# How a record's enforced trace ends, and how often ("dns" only for src-reported records).
VARIANTS = ("allow-web", "allow-api", "allow-metrics", "knp", "dns", "eot-deny",
            "security-deny")
WEIGHTS = (0.35, 0.22, 0.15, 0.08, 0.10, 0.08, 0.02)
DNS = VARIANTS.index("dns")
RULES = 4
PENDING = ("same", "staged-tier", "staged-deny")
PENDING_WEIGHTS = (0.90, 0.06, 0.04)
SEED = 20261126


def _enforced(ns: int, src: bool, variant: str, rule: int) -> list[str]:
    """The enforced trace of a record reported in team namespace ``ns``."""
    team = f"team-{ns:03d}"
    if variant == "security-deny":
        return [f"0|security|security.block-known-bad|deny|{rule}"]
    hits = ["0|security|security.pass|pass|0"]
    if variant == "dns" and src:
        return [*hits, f"1|platform|platform.allow-kube-dns|allow|{rule % 2}"]
    hits += ["1|platform|platform.pass|pass|0", "2|compliance|compliance.pass|pass|0"]
    if ns >= NAMESPACES - UNPROTECTED:
        return [*hits, f"3|__PROFILE__|__PROFILE__.kns.{team}|allow|0"]
    hits.append(f"3|tenants|{team}/tenants.boundary|pass|{rule % 3}")
    if variant == "knp":
        return [*hits, f"4|default|{team}/knp.default.allow-same-namespace|allow|{rule % 2}"]
    if variant == "eot-deny":  # end of tier: credited to the last policy that selected it
        return [*hits, f"4|default|{team}/default.allow-web|deny|-1"]
    policy = "allow-web" if variant == "dns" else variant
    return [*hits, f"4|default|{team}/default.{policy}|allow|{rule}"]


def _pending(enforced: list[str], ns: int, kind: str) -> list[str]:
    """The pending trace: staged policies count as enforced and keep their position."""
    team = f"team-{ns:03d}"
    if kind == "staged-tier" and len(enforced) > 1:
        later = [f"{int(h.split('|', 1)[0]) + 1}|{h.split('|', 1)[1]}" for h in enforced[1:]]
        return [enforced[0], "1|quarantine|quarantine.staged:isolate-compromised|pass|0",
                *later]
    if kind == "staged-deny" and enforced[-1].startswith(f"4|default|{team}/default."):
        return [*enforced[:-1], f"4|default|{team}/default.staged:restrict-egress|deny|-1"]
    if kind == "staged-deny" and "/knp." in enforced[-1]:
        return [*enforced[:-1], f"4|default|{team}/staged:knp.default.deny-all|deny|-1"]
    return enforced


def trace_pools() -> tuple[pa.ListArray, pa.ListArray, np.ndarray]:
    """Every enforced trace (index ``((ns * 2 + dst) * len(VARIANTS) + v) * RULES + rule``),
    every pending trace (index ``enforced * len(PENDING) + p``) and which enforced traces
    end in a deny."""
    enforced, pending = [], []
    for ns in range(NAMESPACES):
        for dst in (0, 1):
            for variant in VARIANTS:
                for rule in range(RULES):
                    trace = _enforced(ns, not dst, variant, rule)
                    enforced.append(trace)
                    pending += [_pending(trace, ns, kind) for kind in PENDING]
    denied = np.array([t[-1].split("|")[3] == "deny" for t in enforced])
    strings = pa.list_(pa.string())
    return pa.array(enforced, strings), pa.array(pending, strings), denied


def workloads() -> tuple[list[str], np.ndarray, np.ndarray]:
    """``name_aggr`` of every workload (coredns last), its namespace index and port."""
    rng = np.random.default_rng(SEED)
    digits = np.array(list("0123456789abcdef"))
    names = [f"{APPS[i % len(APPS)]}-{i:04d}-{''.join(rng.choice(digits, 10))}-*"
             for i in range(WORKLOADS)]
    names.append("coredns-7db6d8ff4d-*")
    ns = np.append(np.arange(WORKLOADS) // PER_NAMESPACE, NAMESPACES)
    ports = np.append(np.array(PORTS)[np.arange(WORKLOADS) % len(PORTS)], 53)
    return names, ns, ports


def _dict(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices, np.int32)), pa.array(values))


def _counters(rng: np.random.Generator, n: int, dst: np.ndarray,
              denied: np.ndarray) -> dict[str, np.ndarray]:
    """Connections and packets/bytes as the reporting endpoint saw them (in = received)."""
    flows = rng.geometric(0.25, n)
    fwd = flows * rng.integers(1, 40, n)  # initiator -> responder
    rev = np.where(denied, 0, flows * rng.integers(1, 60, n))
    fwd_bytes, rev_bytes = fwd * rng.integers(60, 600, n), rev * rng.integers(60, 1400, n)
    return {"packets_in": np.where(dst, fwd, rev), "packets_out": np.where(dst, rev, fwd),
            "bytes_in": np.where(dst, fwd_bytes, rev_bytes),
            "bytes_out": np.where(dst, rev_bytes, fwd_bytes), "num_flows": flows,
            "num_flows_started": rng.binomial(flows, 0.3),
            "num_flows_completed": rng.binomial(flows, 0.3)}


def _side(prefix: str, w: np.ndarray, names: list[str], ns: np.ndarray) -> dict[str, Any]:
    n = len(w)
    spaces = [f"team-{k:03d}" for k in range(NAMESPACES)] + ["kube-system"]
    return {f"{prefix}_ip": pa.nulls(n, pa.string()), f"{prefix}_name": _dict(np.zeros(n), ["-"]),
            f"{prefix}_name_aggr": _dict(w, names), f"{prefix}_namespace": _dict(ns[w], spaces),
            f"{prefix}_type": _dict(np.zeros(n), ["wep"])}


def hour_table(hour: int, rows: int, pools: tuple[Any, ...]) -> pa.Table:
    """The ``rows`` records of hour ``hour``, in time order."""
    enforced, pending, deny, names, ns_of, port_of, edges, edge_p = pools
    rng = np.random.default_rng([SEED, hour])
    per_hour = INTERVALS // 24
    interval = hour * per_hour + np.arange(rows) * per_hour // rows
    e = rng.choice(len(edge_p), rows, p=edge_p)
    dst = rng.integers(0, 2, rows).astype(bool)
    v = rng.choice(len(VARIANTS), rows, p=WEIGHTS)
    v = np.where((v == DNS) & dst, 0, v)
    src_w, dst_w = edges[0][e], np.where(v == DNS, WORKLOADS, edges[1][e])
    ns = np.where(dst, ns_of[dst_w], ns_of[src_w])
    trace = ((ns * 2 + dst) * len(VARIANTS) + v) * RULES + rng.integers(0, RULES, rows)
    pend = trace * len(PENDING) + rng.choice(len(PENDING), rows, p=PENDING_WEIGHTS)
    start = DAY0.timestamp() + interval * INTERVAL
    ts = pa.timestamp("s", tz="UTC")
    cols = {"start_time": pa.array(start.astype(np.int64), ts),
            "end_time": pa.array((start + INTERVAL).astype(np.int64), ts),
            **_side("source", src_w, names, ns_of), **_side("dest", dst_w, names, ns_of),
            "dest_port": pa.array(port_of[dst_w], pa.int32()),
            "proto": _dict((v == DNS).astype(np.int32), ["tcp", "udp"]),
            "action": _dict(deny[trace].astype(np.int32), ["allow", "deny"]),
            "reporter": _dict(dst.astype(np.int32), ["src", "dst"]),
            "enforced_policies": enforced.take(trace), "pending_policies": pending.take(pend),
            **_counters(rng, rows, dst, deny[trace]),
            "host": _dict(np.where(dst, dst_w, src_w) % 40, [f"node-{k:02d}" for k in range(40)]),
            "collector": _dict(np.zeros(rows), ["calico"])}
    return pa.table(cols)


def _pools() -> tuple[Any, ...]:
    enforced, pending, deny = trace_pools()
    names, ns_of, port_of = workloads()
    rng = np.random.default_rng(SEED + 1)
    edges = (rng.integers(0, WORKLOADS, PAIRS), rng.integers(0, WORKLOADS, PAIRS))
    weight = 1.0 / np.arange(1, PAIRS + 1) ** 0.8  # a few busy pairs, a long tail
    return enforced, pending, deny, names, ns_of, port_of, edges, weight / weight.sum()


def store_rows(root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in Store(root).files())


def generate(root: Path, total: int) -> None:
    """Write ``total`` records, one ``add_flows`` + ``commit`` per hour."""
    pools = _pools()
    with Store(root).writer() as w:
        for hour in range(24):
            rows = (hour + 1) * total // 24 - hour * total // 24
            w.add_flows(hour_table(hour, rows, pools), host="bench")
            w.commit()


def rolled_up(root: Path) -> bool:
    """Whether every flows file has its hourly hit rollup, as the store's writer now keeps
    (a store generated before rollups is generated again)."""
    store = Store(root)
    rel = {p.relative_to(store.flows) for p in store.files()}
    return rel == {p.relative_to(root / "rollups" / "hits") for p in store.rollup_files()}


def ensure_store(root: Path | None, rows: int) -> tuple[Path, str]:
    """The store to measure: reused when it holds ``rows`` records (and their rollups), else
    generated; a directory of the user's holding something else is an error."""
    default = root is None
    root = root or Path(tempfile.gettempdir()) / f"tierflow-bench-board-{rows}"
    if root.is_dir() and any(root.iterdir()):
        have = store_rows(root)
        if have == rows and len(Store(root).files()) == 24 and rolled_up(root):
            return root, "reused"
        if not default:
            raise SystemExit(f"--store {root}: holds {have:,} flow records (wanted {rows:,}, "
                             "one file per hour, rolled up); pass a new or empty directory")
        shutil.rmtree(root)
    start = time.perf_counter()
    generate(root, rows)
    return root, f"generated in {time.perf_counter() - start:.0f} s"


# -- the approaches ------------------------------------------------------------------------

COUNTERS = ("packets_in", "packets_out", "bytes_in", "bytes_out")
READ = ["reporter", *COUNTERS, "num_flows", "start_time", "end_time", "enforced_policies",
        "pending_policies"]
WHOLE = Window()
UNALIGNED = Window(DAY0 + timedelta(minutes=30), DAY0 + timedelta(hours=23, minutes=30))
KEYS = ["tier", "kind", "namespace", "policy", "direction", "rule"]
ACTIONS = (("allow", "allowed"), ("deny", "denied"), ("pass", "passed"))
# board.sql sums the records per distinct (reporter, enforced, pending) trace before it takes
# the hit lists apart (f7173e3, as this bench proposed). The query before that change, which
# took every record's lists apart, is kept here as the alternative to measure it against.
_TRACES_CTE = re.compile(r"WITH traces AS \(.*?\n\),\nrecords AS \(", re.DOTALL)
_FROM_TRACES = "    FROM traces\n),"
_FROM_FLOWS = "    FROM board_flows\n    WHERE end_time > $since AND start_time < $until\n),"


def per_record_sql(board_sql: str) -> str:
    """``board.sql`` without its ``traces`` CTE: ``records`` reads ``board_flows`` itself."""
    if len(_TRACES_CTE.findall(board_sql)) != 1 or board_sql.count(_FROM_TRACES) != 1:
        raise SystemExit("analytics/sql/board.sql no longer has the traces CTE that "
                         "bench_board.per_record_sql takes out: update the bench")
    return _TRACES_CTE.sub("WITH records AS (", board_sql).replace(_FROM_TRACES, _FROM_FLOWS)


def _hour(path: Path) -> datetime:
    day, hour = path.parent.parent.name.removeprefix("date="), path.parent.name[5:]
    return datetime.fromisoformat(f"{day}T{hour}:00:00+00:00")


def _board_connection(root: Path, window: Window, rollups: bool) -> duckdb.DuckDBPyConnection:
    """A tierflow connection with board.sql's two inputs as ``analytics.queries.board`` picks
    them: the whole hours inside ``window`` from their rollups (if ``rollups``), the other
    hours that overlap it from the records. Without rollups it is the path of a window's edge
    hours, and of every hour of a store written before rollups."""
    con = connect(root, threads=THREADS, memory_limit=MEMORY_LIMIT)
    store, p = Store(root), window.parameters()
    records, rolled = [], []
    for f in store.files():
        hour, rollup = _hour(f), root / "rollups" / "hits" / f.relative_to(store.flows)
        inside = p["since"] <= hour and hour + timedelta(hours=1) <= p["until"]
        if rollups and inside and rollup.exists():
            rolled.append(str(rollup))
        elif hour < p["until"]:
            records.append(str(f))
    parquet_view(con, "board_flows", records, FLOWS)
    parquet_view(con, "board_rollups", rolled, HITS)
    return con


def tierflow(root: Path, window: Window = WHOLE) -> pa.Table:
    return queries.board(connect(root, threads=THREADS, memory_limit=MEMORY_LIMIT), window)


def tierflow_records(root: Path) -> pa.Table:
    return query(_board_connection(root, WHOLE, rollups=False), sql_text("board"),
                 WHOLE.parameters())


def tierflow_per_record(root: Path, window: Window = WHOLE, rollups: bool = False) -> pa.Table:
    sql = per_record_sql(sql_text("board"))
    return query(_board_connection(root, window, rollups), sql, window.parameters())


def parsed_hits(hits: list[str]) -> list[dict[str, Any]]:
    """Each distinct ``tier|name|action|rule`` parsed once (a few thousand of them)."""
    out = []
    for hit in hits:
        p = parse_hit(f"0|{hit}")
        out.append({"hit": hit, "tier": p.tier, "kind": p.kind, "namespace": p.namespace,
                    "policy": p.name, "rule": p.rule, "action": p.action})
    return out


def _arrow_lists(t: pa.DataType) -> pd.ArrowDtype | None:
    return pd.ArrowDtype(t) if pa.types.is_list(t) else None


def _pandas_part(batch: pa.Table, since: datetime, until: datetime) -> pd.DataFrame:
    """Per (rule, reporter) sums of one row group's records."""
    df = batch.to_pandas(types_mapper=_arrow_lists)
    df = df[(df["end_time"] > since) & (df["start_time"] < until)]
    hits = pd.concat([df["enforced_policies"], df["pending_policies"]]).explode().dropna()
    hits = hits.str.lstrip("0123456789").str[1:].astype("category")  # the position off
    pairs = hits.rename("hit").reset_index().drop_duplicates()  # each rule once per record
    rows = pairs.join(df.drop(columns=["enforced_policies", "pending_policies"]), on="index")
    return rows.groupby(["hit", "reporter"], observed=True).agg(
        **{c: (c, "sum") for c in COUNTERS}, connections=("num_flows", "sum"),
        first_hit=("start_time", "min"), last_hit=("end_time", "max"))


def pandas_board(root: Path) -> pa.Table:
    window = WHOLE.parameters()
    parts = []
    for path in Store(root).files():
        f = pq.ParquetFile(path)
        for i in range(f.num_row_groups):
            batch = f.read_row_group(i, columns=READ)
            parts.append(_pandas_part(batch, window["since"], window["until"]))
    per = pd.concat(parts).groupby(level=["hit", "reporter"], observed=True).agg(
        {**dict.fromkeys([*COUNTERS, "connections"], "sum"), "first_hit": "min",
         "last_hit": "max"}).reset_index()
    per = per.merge(pd.DataFrame(parsed_hits(per["hit"].unique().tolist())), on="hit")
    dst = per["reporter"].astype(str) == "dst"
    per["direction"] = np.where(dst, "ingress", "egress")
    per["connections_in"] = per["connections"].where(dst, 0)
    per["connections_out"] = per["connections"].where(per["reporter"].astype(str) == "src", 0)
    per["namespace"] = per["namespace"].fillna("")  # groupby keys: no nulls
    values = [*COUNTERS, "connections_in", "connections_out"]
    wide = per.pivot_table(index=KEYS, columns="action", values=values, aggfunc="sum",
                           fill_value=0)
    out = pd.DataFrame(index=wide.index)
    for action, prefix in ACTIONS:
        for c in values:
            name = f"{prefix}_{c}"
            out[name] = wide[(c, action)] if (c, action) in wide.columns else 0
    times = per.groupby(KEYS).agg(first_hit=("first_hit", "min"), last_hit=("last_hit", "max"))
    out = out.join(times).reset_index()
    out["namespace"] = out["namespace"].replace("", None)
    out["staged"] = out["kind"].str.startswith("Staged")
    out["end_of_tier"] = (out["rule"] == -1) | (out["kind"] == "EndOfTier")
    return pa.Table.from_pandas(out, preserve_index=False)


def _polars_per_hit(root: Path) -> pl.DataFrame:
    window = WHOLE.parameters()
    empty = pl.lit([], dtype=pl.List(pl.String))
    hits = pl.concat_list(pl.col("enforced_policies").fill_null(empty),
                          pl.col("pending_policies").fill_null(empty))
    strip = pl.element().str.slice(pl.element().str.find("|", literal=True) + 1)
    return (
        pl.scan_parquet([str(p) for p in Store(root).files()], hive_partitioning=False)
        .filter((pl.col("end_time") > window["since"]) & (pl.col("start_time") < window["until"]))
        .select(pl.col("reporter").cast(pl.String), *COUNTERS, "num_flows", "start_time",
                "end_time", hit=hits.list.eval(strip).list.unique())
        .explode("hit").drop_nulls("hit")
        .group_by("hit", "reporter")
        .agg(pl.col(*COUNTERS).sum(), connections=pl.col("num_flows").sum(),
             first_hit=pl.col("start_time").min(), last_hit=pl.col("end_time").max())
        .collect(engine="streaming"))


def polars_board(root: Path) -> pa.Table:
    per = _polars_per_hit(root)
    parsed = pl.DataFrame(parsed_hits(per["hit"].unique().to_list()),
                          schema_overrides={"namespace": pl.String})
    per = per.join(parsed, on="hit").with_columns(
        direction=pl.when(pl.col("reporter").str.starts_with("dst"))
        .then(pl.lit("ingress")).otherwise(pl.lit("egress")))
    sums = []
    for action, prefix in ACTIONS:
        taken = pl.col("action") == action
        sums += [pl.col(c).filter(taken).sum().alias(f"{prefix}_{c}") for c in COUNTERS]
        sums += [pl.col("connections").filter(taken & (pl.col("reporter") == r)).sum()
                 .alias(f"{prefix}_connections_{side}") for r, side in (("dst", "in"),
                                                                        ("src", "out"))]
    board = per.group_by(KEYS).agg(*sums, first_hit=pl.col("first_hit").min(),
                                   last_hit=pl.col("last_hit").max())
    board = board.with_columns(
        staged=pl.col("kind").str.starts_with("Staged"),
        end_of_tier=(pl.col("rule") == -1) | (pl.col("kind") == "EndOfTier"))
    return board.to_arrow()


APPROACHES: dict[str, tuple[str, Callable[[Path], pa.Table]]] = {
    "tierflow": ("tierflow queries.board (as shipped)", tierflow),
    "records": ("board.sql over every record", tierflow_records),
    "per-record": ("old board.sql over every record", tierflow_per_record),
    "pandas": ("pandas (pyarrow row groups, explode)", pandas_board),
    "polars": ("polars (lazy, streaming engine)", polars_board),
    "unaligned": ("tierflow queries.board (as shipped)", lambda r: tierflow(r, UNALIGNED)),
    "unaligned-old": ("old board.sql (per record) + rollups",
                      lambda r: tierflow_per_record(r, UNALIGNED, rollups=True)),
}
# Boards that must be equal, each group's first the reference: the whole day, and a window
# of 00:30-23:30 (22 whole hours from the rollups, the 2 edge hours from the records).
GROUPS = {"whole window (24 h)": ["tierflow", "records", "per-record", "pandas", "polars"],
          "window 00:30-23:30 (2 edge hours of records)": ["unaligned", "unaligned-old"]}


# -- the same board ------------------------------------------------------------------------

def canonical(board: pa.Table, columns: list[str]) -> pa.Table:
    """``board``'s ``columns`` with plain types (int64, string, timestamp[s]), sorted."""
    if sorted(board.column_names) != sorted(columns):
        raise AssertionError(f"columns differ: {board.column_names} vs {columns}")
    out = {}
    for name in columns:
        col = board[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_integer(col.type):
            col = col.cast(pa.int64())
        elif pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("s", tz="UTC"))
        elif not pa.types.is_boolean(col.type):
            col = col.cast(pa.string())
        out[name] = col
    return pa.table(out).sort_by([(k, "ascending") for k in KEYS])


def assert_same(label: str, board: pa.Table, reference: pa.Table) -> None:
    """Same rows and counters as tierflow's board, or an AssertionError naming a row."""
    columns = reference.column_names
    a, b = canonical(board, columns), canonical(reference, columns)
    if a.equals(b):
        return
    if a.num_rows != b.num_rows:
        raise AssertionError(f"{label}: {a.num_rows} rows, tierflow {b.num_rows}")
    for i, (x, y) in enumerate(zip(a.to_pylist(), b.to_pylist(), strict=True)):
        if x != y:
            diff = {k: (x[k], y[k]) for k in columns if x[k] != y[k]}
            raise AssertionError(f"{label}: row {i} {[y[k] for k in KEYS]}: (it, tierflow) "
                                 f"{diff}")


# -- measuring, each approach in its own process -------------------------------------------

def _status(key: str) -> float:
    """``VmHWM``/``VmRSS`` of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, root: Path, repeat: int, budget: float, result: Path) -> None:
    """Child process: run approach ``name`` until ``repeat`` runs or ``budget`` seconds,
    save its board to ``result`` and print one JSON line."""
    pa.set_cpu_count(THREADS)
    pa.set_io_thread_count(THREADS)
    baseline, runs, spent = _status("VmRSS"), [], 0.0
    while len(runs) < repeat and (not runs or spent + min(r["wall"] for r in runs) <= budget):
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        board = APPROACHES[name][1](root)
        runs.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                     "load": load})
        spent += runs[-1]["wall"]
    with pa.OSFile(str(result), "wb") as f, pa.ipc.new_file(f, board.schema) as w:
        w.write_table(board)
    policies = board.group_by(["tier", "kind", "namespace", "policy"]).aggregate([]).num_rows
    print(json.dumps({"name": name, "runs": runs, "hwm": _status("VmHWM"), "baseline": baseline,
                      "rows": board.num_rows, "policies": policies}), flush=True)


def _child(args: list[str]) -> str:
    env = {**os.environ, "POLARS_MAX_THREADS": str(THREADS)}
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    return subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout


def run_all(root: Path, names: list[str], repeat: int, budget: float,
            tmp: Path) -> tuple[list[dict[str, Any]], dict[str, pa.Table]]:
    results, boards = [], {}
    for name in names:
        print(f"measuring {APPROACHES[name][0]} ...", file=sys.stderr, flush=True)
        out = tmp / f"{name}.arrow"
        line = _child(["--measure", name, "--store", str(root), "--repeat", str(repeat),
                       "--budget", str(budget), "--result", str(out)])
        results.append(json.loads(line.splitlines()[-1]))
        with pa.memory_map(str(out)) as f:
            boards[name] = pa.ipc.open_file(f).read_all()
    return results, boards


# -- where the time goes -------------------------------------------------------------------

def _operators(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children", []):
        yield from _operators(child)


def _what(op: dict[str, Any]) -> str:
    info = op.get("extra_info") or {}
    if op.get("type") == "TABLE_SCAN":
        return f"{len(info.get('Projections', []))} columns, {op.get('rows_scanned', 0):,} rows"
    if "Groups" in info:
        return f"{len(info['Groups'])} keys, {len(info.get('Aggregates', []))} aggregates"
    exprs = info.get("Projections", [])
    computed = [e for e in exprs if "(" in e]  # else the computed column is the last one
    return (computed[0] if computed else f"... {exprs[-1]}" if exprs else "")[:90]


def profile(name: str, root: Path) -> None:
    """Child process: ``EXPLAIN ANALYZE`` of one records query; one JSON line."""
    sql = {"records": sql_text("board"), "per-record": per_record_sql(sql_text("board"))}[name]
    con = _board_connection(root, WHOLE, rollups=False)
    wall = time.perf_counter()
    plan = con.execute(f"EXPLAIN (ANALYZE, FORMAT json) {sql}", WHOLE.parameters())
    tree = json.loads(plan.fetchall()[0][1])
    wall = time.perf_counter() - wall
    ops = [{"op": o["name"], "s": o.get("timing", 0.0), "rows": o.get("intermediate_rows", 0),
            "what": _what(o)} for root_op in tree["operator"] for o in _operators(root_op)]
    print(json.dumps({"name": name, "wall": wall, "cpu": tree["query"]["cpu_time"],
                      "peak_buffer": tree["system"].get("peak_buffer_memory", 0),
                      "spilled": tree["system"].get("total_bytes_spilled", 0), "ops": ops}))


def profile_lines(p: dict[str, Any]) -> list[str]:
    total = sum(o["s"] for o in p["ops"]) or 1.0
    lines = [f"EXPLAIN ANALYZE {APPROACHES[p['name']][0]}: {p['wall']:.2f} s wall, "
             f"{p['cpu']:.2f} s CPU, operators {total:.2f} s (summed over threads); DuckDB "
             f"peak buffer {p['peak_buffer'] / 2**20:,.0f} MB, spilled {p['spilled']:,} B",
             f"  {'operator':<15} {'s':>7} {'share':>6} {'rows out':>12}  what"]
    shown = [o for o in p["ops"] if o["s"] >= 0.01 * total]
    lines += [f"  {o['op']:<15} {o['s']:>7.2f} {o['s'] / total:>6.0%} {o['rows']:>12,}  "
              f"{o['what']}" for o in shown]
    rest = total - sum(o["s"] for o in shown)
    lines.append(f"  {'(the others)':<15} {rest:>7.2f} {rest / total:>6.0%}")
    if any(o["what"].endswith(" hits") for o in shown):
        lines.append("  (hits = list_distinct(list_transform(list_concat(enforced, pending), "
                     "lambda h: substr(h, strpos(h, '|') + 1))), once per row it reads)")
    return lines


# -- the report ----------------------------------------------------------------------------

def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def table_lines(title: str, results: list[dict[str, Any]]) -> list[str]:
    base = min(r["wall"] for r in results[0]["runs"])
    lines = [f"{title}: {results[0]['rows']:,} board rows ({results[0]['policies']:,} "
             "policies), the boards below all identical",
             f"  {'approach':<38} {'runs':>4} {'best s':>7} {'CPU s':>7} {'load':>5} "
             f"{'peak RSS MB':>11} {'imports MB':>10} {'x tierflow':>10}"]
    for r in results:
        best = min(r["runs"], key=lambda run: run["wall"])
        lines.append(f"  {APPROACHES[r['name']][0]:<38} {len(r['runs']):>4} {best['wall']:>7.2f}"
                     f" {best['cpu']:>7.2f} {best['load']:>5.1f} {r['hwm']:>11,.0f} "
                     f"{r['baseline']:>10,.0f} {best['wall'] / base:>10.1f}")
    return lines


def verdict(title: str, r: dict[str, Any]) -> str:
    best = min(run["wall"] for run in r["runs"])
    ok = best <= 3.0 and r["hwm"] < 1024
    return (f"  {'MET   ' if ok else 'MISSED'} {APPROACHES[r['name']][0]}, {title}: {best:.2f} s, "
            f"peak RSS {r['hwm']:,.0f} MB")


def report(root: Path, how: str, results: dict[str, dict[str, Any]],
           profiles: list[dict[str, Any]]) -> str:
    files = Store(root).files()
    lines = [
        f"policies board: {store_rows(root):,} flow records over 24 h, {len(files)} files, "
        f"{sum(p.stat().st_size for p in files) / 1e6:,.0f} MB zstd Parquet + hourly hit "
        f"rollups ({how}: {root})",
        f"pinned to {len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs ({cpu_model()}); "
        f"DuckDB threads={THREADS} memory_limit={MEMORY_LIMIT}, POLARS_MAX_THREADS={THREADS}, "
        f"Arrow CPU pool {THREADS}; Python {sys.version.split()[0]}, duckdb {duckdb.__version__}"
        f", pandas {pd.__version__}, polars {pl.__version__}, pyarrow {pa.__version__}",
        "each approach in its own process; best s = fastest wall time, CPU s = its CPU time "
        "(all threads), load = 1-min load average as it started (other jobs share the CPUs); "
        "peak RSS = VmHWM, imports = RSS before the first run (pandas, polars, duckdb, pyarrow)",
    ]
    for title, names in GROUPS.items():
        lines += ["", *table_lines(title, [results[n] for n in names])]
    lines += ["", "target: <= 3 s and < 1 GiB on 2 cores"]
    lines += [verdict(title, results[n]) for title, names in GROUPS.items() for n in names
              if n not in ("pandas", "polars")]
    for p in profiles:
        lines += ["", *profile_lines(p)]
    lines += ["", "board.sql = records summed per (reporter, enforced, pending) trace first "
              "(traces CTE, f7173e3); old board.sql = the same without it, every record's lists "
              "taken apart"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--store", type=Path, help="generated store, kept for the next run "
                        "(default: TMPDIR/tierflow-bench-board-ROWS)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per approach, best kept")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="no further run of an approach once its runs took this many s")
    parser.add_argument("--no-profile", action="store_true", help="skip EXPLAIN ANALYZE")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "board.txt")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child: one approach
    parser.add_argument("--profile", help=argparse.SUPPRESS)  # child: one EXPLAIN ANALYZE
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:THREADS]))
    if args.measure:
        measure(args.measure, args.store, args.repeat, args.budget, args.result)
        return
    if args.profile:
        profile(args.profile, args.store)
        return
    root, how = ensure_store(args.store, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        results, boards = run_all(root, list(APPROACHES), args.repeat, args.budget, Path(tmp))
    for reference, *others in GROUPS.values():
        for name in others:  # a wrong board must not look fast
            assert_same(APPROACHES[name][0], boards[name], boards[reference])
    profiles = [] if args.no_profile else [
        json.loads(_child(["--profile", name, "--store", str(root)]).splitlines()[-1])
        for name in ("records", "per-record")]
    text = report(root, how, {r["name"]: r for r in results}, profiles)
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
