"""Hourly rollups of policy hits, written beside the flow records in the same transaction.

For each hour of ``start_time``, each policy hit (``tier|name|action|rule``, the hit string
without its position) and reporter: the packets, bytes and connections of the records whose
enforced or pending trace hit it — each rule once per record, exactly as the policies board
credits them — and the first and last time. The board reads whole hours of a long window
from here and only the window's edge hours from the records, so 30 days cost about what an
hour does.

``STORE/rollups/hits/date=YYYY-MM-DD/hour=HH/part-*.parquet``
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

__all__ = ["HITS", "hit_rollup"]

HITS = pa.schema([
    pa.field("hour", pa.timestamp("s", tz="UTC"), nullable=False),
    pa.field("hit", pa.string(), nullable=False),  # tier|name|action|rule
    pa.field("reporter", pa.string()),
    pa.field("packets_in", pa.int64()),
    pa.field("packets_out", pa.int64()),
    pa.field("bytes_in", pa.int64()),
    pa.field("bytes_out", pa.int64()),
    pa.field("connections", pa.int64()),
    pa.field("first_hit", pa.timestamp("s", tz="UTC")),
    pa.field("last_hit", pa.timestamp("s", tz="UTC")),
], metadata={b"tierflow.schema": b"rollup-hits", b"tierflow.schema_version": b"1"})


def hit_rollup(flows: pa.Table) -> pa.Table:
    """The rollup rows of a table of flow records (FLOWS)."""
    if flows.num_rows == 0:
        return HITS.empty_table()
    df = pl.from_arrow(flows.select([
        "start_time", "end_time", "reporter", "packets_in", "packets_out", "bytes_in",
        "bytes_out", "num_flows", "enforced_policies", "pending_policies"]))
    assert isinstance(df, pl.DataFrame)
    empty = pl.lit([], dtype=pl.List(pl.String))
    hits = pl.concat_list(pl.col("enforced_policies").fill_null(empty),
                          pl.col("pending_policies").fill_null(empty))
    out = (
        df.with_columns(
            hour=pl.col("start_time").dt.truncate("1h"),
            reporter=pl.col("reporter").cast(pl.String),
            hit=hits.list.eval(pl.element().str.splitn("|", 2).struct.field("field_1"))
            .list.unique())
        .explode("hit")
        .drop_nulls("hit")
        .group_by("hour", "hit", "reporter")
        .agg(pl.col("packets_in", "packets_out", "bytes_in", "bytes_out").sum(),
             connections=pl.col("num_flows").sum(),
             first_hit=pl.col("start_time").min(), last_hit=pl.col("end_time").max())
        .sort("hour", "hit", "reporter")
    )
    return out.to_arrow().select(HITS.names).cast(HITS)
