"""Writing flow records as a Calico Enterprise ``flows.log`` (JSON lines,
``reference/calico.md`` §1.2), the inverse of :mod:`ingest.calico_log`: what this writes,
``tierflow ingest calico`` reads back as the same records.

One line per record, keys in the order Felix's serializer writes them
(``felix/collector/flowlog/json_serializer.go``), then ``host`` as the log pipeline adds it:

* times as Unix seconds, ports as integers, labels as ``{"labels": ["k=v", ...]}``;
* ``policies`` is ``{"enforced_policies": [...], "pending_policies": [...],
  "transit_policies": [...], "all_policies": [...]}`` (§1.4), hits in index order, or
  ``null`` when the record has no policy columns (captured without ``--policies``), as Felix
  writes it when policies are not included;
* a value the record does not have is ``null``, also where Felix would write ``0`` or ``""``
  (transit, process and TCP fields of captured traffic, ``all_policies`` of current
  records), so that nothing is claimed that was not observed and the round trip is exact.
  Only ``collector`` is not written: the reader sets it to ``calico``.

>>> import io, pyarrow as pa
>>> from ingest.schema import FLOWS
>>> row = {"start_time": 1764237600, "end_time": 1764237615, "proto": "tcp",
...        "action": "allow", "reporter": "src", "source_type": "net", "dest_type": "net"}
>>> out = io.BytesIO()
>>> write_calico_log([pa.Table.from_pylist([row], schema=FLOWS)], out)
1
>>> out.getvalue()[:54]
b'{"start_time":1764237600,"end_time":1764237615,"source'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.schema import FLOWS, conform
from ingest.store import Store, StoreError

__all__ = ["KEYS", "ExportSummary", "export_calico", "store_records", "to_calico_json",
           "write_calico_log"]

# Felix's JSONOutput field order, then "host" (added by fluentd / Linseed).
KEYS = (
    "start_time", "end_time",
    "source_ip", "source_name", "source_name_aggr", "source_namespace", "nat_outgoing_ports",
    "source_port", "source_type", "source_labels",
    "dest_ip", "dest_name", "dest_name_aggr", "dest_namespace", "dest_port", "dest_type",
    "dest_labels",
    "dest_service_namespace", "dest_service_name", "dest_service_port",
    "dest_service_port_num", "dest_domains",
    "proto", "action", "reporter", "policies",
    "bytes_in", "bytes_out", "num_flows", "num_flows_started", "num_flows_completed",
    "packets_in", "packets_out",
    "transit_bytes_in", "transit_bytes_out", "transit_packets_in", "transit_packets_out",
    "http_requests_allowed_in", "http_requests_denied_in",
    "process_name", "num_process_names", "process_id", "num_process_ids", "process_args",
    "num_process_args", "original_source_ips", "num_original_source_ips",
    "tcp_mean_send_congestion_window", "tcp_min_send_congestion_window", "tcp_mean_smooth_rtt",
    "tcp_max_smooth_rtt", "tcp_mean_min_rtt", "tcp_max_min_rtt", "tcp_mean_mss", "tcp_min_mss",
    "tcp_total_retransmissions", "tcp_lost_packets", "tcp_unrecovered_to",
    "host",
)
POLICY_KEYS = ("enforced_policies", "pending_policies", "transit_policies", "all_policies")
# Records of one hour are written in this order (then by every other key), so the same
# records give the same file, whatever files and row order the store holds them in.
_ORDER = ("start_time", "end_time", "source_namespace", "source_name_aggr", "source_name",
          "source_ip", "source_port", "dest_namespace", "dest_name_aggr", "dest_name",
          "dest_ip", "dest_port", "proto", "reporter", "action")
_STRINGS = pa.list_(pa.string())


@dataclass(frozen=True)
class ExportSummary:
    records: int
    hours: int  # hour partitions that held records in the window


def to_calico_json(table: pa.Table) -> pa.Table:
    """FLOWS rows → one column per flows.log key, in :data:`KEYS` order, shaped as the JSON
    (strings, integers, ``{"labels": [...]}`` and ``policies`` structs)."""
    table = conform(table)
    cols: dict[str, pa.Array] = {}
    for name in KEYS:
        if name in ("source_labels", "dest_labels"):
            cols[name] = _labels(_one(table[name]))
        elif name == "policies":
            cols[name] = _policies(table)
        else:
            cols[name] = _plain(_one(table[name]))
    return pa.table(cols)


def write_calico_log(tables: Iterable[pa.Table], out: BinaryIO) -> int:
    """Write the FLOWS ``tables`` to ``out`` as flows.log lines, each table sorted (by
    :data:`_ORDER`, then every key); return the number of records written."""
    written = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        frame = pl.from_arrow(to_calico_json(table))
        assert isinstance(frame, pl.DataFrame)
        rest = [k for k in KEYS if k not in _ORDER]
        frame.sort([*_ORDER, *rest], maintain_order=True).write_ndjson(out)
        written += table.num_rows
    return written


def store_records(store: Store, since: datetime | None = None,
                  until: datetime | None = None) -> Iterator[pa.Table]:
    """The store's records whose interval overlaps ``[since, until)`` (an open end when
    ``None``), one FLOWS table per hour partition, oldest first; memory holds one hour."""
    _check(store)
    by_hour: dict[Path, list[Path]] = {}
    for f in store.files():
        by_hour.setdefault(f.parent, []).append(f)
    for hour, files in sorted(by_hour.items()):  # date=YYYY-MM-DD/hour=HH sorts by time
        if until is not None and _hour_start(hour, store) >= until:
            break  # an hour holds the records that start in it
        table = pa.concat_tables([conform(pq.ParquetFile(f).read()) for f in files])
        mask = np.ones(table.num_rows, dtype=bool)
        # Whole seconds: end_time > 100.5 is end_time > 100, start_time < 100.5 is < 101.
        if since is not None:
            mask &= _np(pc.greater(table["end_time"], _at(math.floor(since.timestamp()))))
        if until is not None:
            mask &= _np(pc.less(table["start_time"], _at(math.ceil(until.timestamp()))))
        if mask.all():
            yield table
        elif mask.any():
            yield table.filter(pa.array(mask))


def export_calico(store: Store, out: BinaryIO, since: datetime | None = None,
                  until: datetime | None = None) -> ExportSummary:
    """Write the store's records overlapping ``[since, until)`` to ``out`` as a flows.log,
    hour by hour."""
    hours = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal hours
        for table in store_records(store, since, until):
            hours += 1
            yield table

    records = write_calico_log(counted(), out)
    return ExportSummary(records, hours)


# --- columns ----------------------------------------------------------------------------------

def _one(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _plain(values: pa.Array) -> pa.Array:
    """Times as Unix seconds, dictionaries as their strings, integers as int64."""
    typ = values.type
    if pa.types.is_timestamp(typ):
        return values.cast(pa.int64())
    if pa.types.is_dictionary(typ):
        return values.cast(typ.value_type)
    if pa.types.is_integer(typ):
        return values.cast(pa.int64())
    return values


def _labels(maps: pa.MapArray) -> pa.StructArray:
    """map → ``{"labels": ["k=v", ...]}`` in the map's order; a null map stays null."""
    if maps.offset:  # a slice: its offsets would point into the whole array's entries
        maps = pa.concat_arrays([maps])
    pairs = pc.binary_join_element_wise(maps.keys, maps.items, "=")
    lists = pa.ListArray.from_arrays(maps.offsets, pairs)
    return pa.StructArray.from_arrays([lists], names=["labels"], mask=maps.is_null())


def _policies(table: pa.Table) -> pa.StructArray:
    """The four hit lists as one ``policies`` struct, null where all four are null."""
    lists = [_one(table[name]).cast(_STRINGS) for name in POLICY_KEYS]
    none = pc.and_(pc.and_(lists[0].is_null(), lists[1].is_null()),
                   pc.and_(lists[2].is_null(), lists[3].is_null()))
    return pa.StructArray.from_arrays(lists, names=list(POLICY_KEYS), mask=none)


def _at(seconds: int) -> pa.Scalar:
    return pa.scalar(seconds, FLOWS.field("start_time").type)


def _np(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


# --- the store --------------------------------------------------------------------------------

def _check(store: Store) -> None:
    if not store.root.is_dir():
        raise FileNotFoundError(f"{store.root}: no such store directory (ingest into it "
                                "first, e.g. tierflow ingest pcap FILE --store DIR)")
    if not (store.flows.is_dir() or store.state.is_dir()):
        raise StoreError(f"{store.root}: not a tierflow store (no flows/ or _state/ in it; "
                         "give the directory that tierflow ingest --store wrote)")


def _hour_start(hour: Path, store: Store) -> datetime:
    """``flows/date=2026-11-27/hour=17`` → 2026-11-27 17:00 UTC."""
    day, hh = hour.relative_to(store.flows).parts
    return datetime.fromisoformat(f"{day.removeprefix('date=')}T{hh.removeprefix('hour=')}"
                                  ":00:00").replace(tzinfo=UTC)
