"""DuckDB over the flow store, read-only and offline.

:func:`connect` opens an in-memory DuckDB whose ``flows`` view reads the store's committed
Parquet files (with the hive partition columns ``date`` and ``hour``). The connection can read
those files and nothing else: extension auto-loading and installing are off (no downloads), and
file-system access is limited to the store's files and then locked, so a query can neither
write into the store nor read elsewhere.
"""

from __future__ import annotations

import os
from datetime import datetime
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.schema import FLOWS
from ingest.store import Store

__all__ = ["QueryError", "connect", "define_views", "parquet_view", "query", "sql_text"]


class QueryError(ValueError):
    """SQL that DuckDB refused: the first line of its message."""

_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
           "allow_community_extensions": False}


def connect(root: str | os.PathLike[str], threads: int | None = None,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only view of the store at ``root`` (the ``flows`` view is empty, with the flow
    schema, when nothing has been ingested yet)."""
    store = Store(root)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: no such store directory (ingest into it first, "
                                "e.g. tierflow ingest pcap FILE --store DIR)")
    flows, rollups = store.files(), store.rollup_files()
    files = [str(p) for p in flows]
    config = dict(_CONFIG)
    if threads:
        config["threads"] = str(threads)
    if memory_limit:  # e.g. "1GB"; DuckDB spills to its temp directory beyond it
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET allowed_paths = ?", [files + [str(p) for p in rollups]])
    con.execute("SET enable_external_access = false")
    con.execute("SET TimeZone = 'UTC'")
    # Cron jobs and pipes read the output: a long query must not draw a progress bar.
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    parquet_view(con, "flows", files, FLOWS)
    con.from_arrow(_file_table(store, flows, rollups)).create_view("store_files")
    define_views(con)
    return con


def parquet_view(con: duckdb.DuckDBPyConnection, name: str, files: list[str],
                 schema: pa.Schema) -> None:
    """(Re)define view ``name`` over ``files`` (hive partitions as columns), or over an empty
    table of ``schema`` when there are none."""
    if files:
        con.read_parquet(files, hive_partitioning=True, union_by_name=True).create_view(
            name, replace=True)
    else:
        con.from_arrow(schema.empty_table()).create_view(name, replace=True)


def _file_table(store: Store, flows: list[Path], rollups: list[Path]) -> pa.Table:
    """Every flows file with its hour and whether its hourly hit rollup exists."""
    root = store.root / "rollups" / "hits"
    rolled = {p.relative_to(root) for p in rollups}
    rows = []
    for p in flows:
        rel = p.relative_to(store.flows)
        day, hour = rel.parts[0].removeprefix("date="), rel.parts[1].removeprefix("hour=")
        rows.append({"path": str(p), "rollup": str(root / rel) if rel in rolled else None,
                     "hour": datetime.fromisoformat(f"{day}T{hour}:00:00+00:00")})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("path", pa.string()), ("rollup", pa.string()), ("hour", pa.timestamp("s", tz="UTC"))]))


def sql_text(name: str) -> str:
    """The text of ``analytics/sql/<name>.sql``."""
    return resources.files("analytics").joinpath("sql", f"{name}.sql").read_text()


def define_views(con: duckdb.DuckDBPyConnection) -> None:
    """The macros and views over an existing ``flows`` view: ``policy_hits``, ``endpoints``."""
    for name in ("macros", "views"):
        con.execute(sql_text(name))


def query(con: duckdb.DuckDBPyConnection, sql: str,
          parameters: list[object] | dict[str, object] | None = None) -> pa.Table:
    """Run ``sql`` with bound ``parameters`` and return the result as Arrow."""
    try:
        rel = con.sql(sql, params=parameters or None)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as e:
        raise QueryError(str(e).splitlines()[0]) from e
