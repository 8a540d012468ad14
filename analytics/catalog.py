"""A DuckDB database file whose views read the store, for the duckdb CLI, DBeaver or a
notebook: ``flows`` (a glob over the store, so files ingested later are seen), the tierflow
macros, ``policy_hits`` and ``endpoints``. The file holds no data."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from analytics.db import define_views

__all__ = ["write_catalog"]


def write_catalog(store: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    root = Path(store).resolve()
    if not (root / "flows").is_dir() or not any((root / "flows").glob("date=*/hour=*/*.parquet")):
        raise FileNotFoundError(f"{store}: no flow records yet (ingest into it first; the "
                                "catalog's views need at least one file to learn the schema)")
    target = Path(out)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        glob = str(root / "flows" / "date=*" / "hour=*" / "*.parquet")
        con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet({_literal(glob)}, "
                    "hive_partitioning = true, union_by_name = true)")
        define_views(con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, target)
    return target


def _literal(text: str) -> str:
    """A SQL string literal (DDL takes no bound parameters): quotes doubled."""
    return "'" + text.replace("'", "''") + "'"
