"""Compaction: merge each hour partition's files into few large ones.

Query results do not change: the same rows are rewritten (ordered by ``start_time``) and the
old files are deleted in the same store transaction that publishes the new ones, so a killed
compaction leaves either the old files or the new ones (see :mod:`ingest.store`).

Every file is written with its hourly hit rollup (:mod:`ingest.rollups`), so rollups stay in
step by themselves; an hour holding a file without one (a store written before rollups
existed) is rewritten even when it is a single file, which gives it its rollup. Compacting
a compacted store changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.schema import FLOWS, conform
from ingest.store import Store

__all__ = ["CompactResult", "compact_store"]


@dataclass
class CompactResult:
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


def compact_store(store: Store, target_rows: int = 5_000_000,
                  wait: float | None = None) -> CompactResult:
    """Merge every hour partition holding more than one file; one transaction each."""
    result = CompactResult()
    with store.writer(wait) as w:
        by_hour: dict[Path, list[Path]] = {}
        for f in store.files():
            by_hour.setdefault(f.parent, []).append(f)
        rolled = set(store.rollup_files())
        for hour, files in sorted(by_hour.items()):
            if len(files) < 2 and all(_rollup_of(store, f) in rolled for f in files):
                continue
            tables = [conform(pq.read_table(f, schema=None), FLOWS) for f in files]
            merged = pa.concat_tables(tables).sort_by([("start_time", "ascending")])
            rel = hour.relative_to(store.flows)
            chunks = range(0, merged.num_rows, target_rows) if merged.num_rows else range(1)
            for n, start in enumerate(chunks):
                part = merged.slice(start, target_rows)
                w.replace(files if n == 0 else [], part,
                          f"{rel}/part-compacted-{w.txid}-{n:04d}.parquet")
            w.commit()
            result.partitions += 1
            result.files_before += len(files)
            result.files_after += len(chunks)
            result.rows += merged.num_rows
    return result


def _rollup_of(store: Store, flows_file: Path) -> Path:
    return store.root / "rollups" / "hits" / flows_file.relative_to(store.flows)
