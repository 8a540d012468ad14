"""The questions the store answers, one ``.sql`` file each, run with bound parameters.

Each function takes a connection from :func:`analytics.db.connect`, a :class:`Window` and
filters, and returns an Arrow table. ``board`` is the Policies Board (per tier, policy and rule;
reference/calico.md §9); ``flows`` the flow visualizer's edges; ``denied``, ``unprotected``,
``external``, ``talkers`` and ``timeseries`` the usual follow-up questions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from analytics.db import parquet_view, query, sql_text
from analytics.window import Window
from ingest.rollups import HITS
from ingest.schema import FLOWS

ALL_TIME = Window()

__all__ = ["ALL_TIME", "board", "board_of", "external", "flows", "talkers", "timeseries",
           "unprotected"]


def _run(con: duckdb.DuckDBPyConnection, name: str, window: Window,
         **params: Any) -> pa.Table:
    return query(con, sql_text(name), {**window.parameters(), **params})  # type: ignore[arg-type]


def board(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME) -> pa.Table:
    """The policies board; whole hours inside the window come from the hourly rollups
    (when every file of the hour has one), the rest from the records."""
    params = window.parameters()
    files = query(con, "SELECT path, rollup, hour FROM store_files").to_pylist()
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for f in files:
        by_hour.setdefault(f["hour"], []).append(f)
    rolled = {h for h, fs in by_hour.items() if all(f["rollup"] for f in fs)
              and h >= params["since"] and h + timedelta(hours=1) <= params["until"]}
    # A record starts in its file's hour, so files from the window's end on cannot overlap.
    edges = [f["path"] for f in files if f["hour"] not in rolled and f["hour"] < params["until"]]
    parquet_view(con, "board_flows", edges, FLOWS)
    parquet_view(con, "board_rollups", [f["rollup"] for f in files if f["hour"] in rolled], HITS)
    return _run(con, "board", window)


def board_of(con: duckdb.DuckDBPyConnection, records: pa.Table,
             window: Window = ALL_TIME) -> pa.Table:
    """The policies board over ``records`` (reporter, enforced and pending traces, counters,
    start and end time), e.g. records re-evaluated with staged policies
    (:func:`analytics.preview.reevaluate`), instead of the store's."""
    con.from_arrow(records).create_view("board_flows", replace=True)
    parquet_view(con, "board_rollups", [], HITS)
    return _run(con, "board", window)


def flows(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, *,
          namespace: str | None = None, workload: str | None = None,
          action: str | None = None, reporter: str | None = None) -> pa.Table:
    return _run(con, "flows", window, namespace=namespace, workload=workload, action=action,
                reporter=reporter)


def unprotected(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, *,
                namespace: str | None = None) -> pa.Table:
    return _run(con, "unprotected", window, namespace=namespace)


def external(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, *,
             namespace: str | None = None) -> pa.Table:
    return _run(con, "external", window, namespace=namespace)


def talkers(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, *,
            limit: int = 20, namespace: str | None = None) -> pa.Table:
    return _run(con, "talkers", window, limit=limit, namespace=namespace)


def timeseries(con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, *,
               namespace: str | None = None) -> pa.Table:
    return _run(con, "timeseries", window, namespace=namespace)
