"""Ingest jobs: sources → flow records → the store, exactly once per source file.

Each job takes the store's writer lock, skips what earlier runs consumed (by file
fingerprint, so rotation and re-runs are safe), and commits data and source positions
together. Bad input is counted and kept in ``STORE/rejects/``; it never stops a job.

* ``pcap``: each capture is ingested whole, committed once at its end; a killed job
  re-reads the capture on the next run (nothing of it was committed).
* ``calico``: ``flows.log`` files are read from where the last run stopped, committed per
  batch; a growing file's partial last line waits for the next run.
* ``conntrack``: each snapshot file is ingested once; counters become deltas against the
  previous snapshot of the same host, which the store keeps for the next run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.calico_log import read_calico_log
from ingest.conntrack import Snapshot, parse_conntrack, segments
from ingest.flows import FlowBuilder
from ingest.pcap import read_pcap
from ingest.schema import DNS, Reject
from ingest.store import Store, Writer

__all__ = ["IngestSummary", "Progress", "ingest_calico", "ingest_conntrack", "ingest_pcap"]

# progress(file, bytes done in that file, its size)
Progress = Callable[[str, int, int], None]

SEGMENT_BUFFER_ROWS = 2_000_000


@dataclass
class IngestSummary:
    """What a job did: the one-line summary the CLI prints."""

    source: str
    files: int = 0
    skipped_files: int = 0  # already ingested
    records_in: int = 0  # packets, log lines or conntrack entries read
    rejected: int = 0
    written: int = 0  # flow records committed
    seconds: float = 0.0
    pending_bytes: int = 0  # an incomplete last line left for the next run
    messages: list[str] = field(default_factory=list)  # first few reject messages

    def note(self, rejects: Sequence[Reject]) -> None:
        self.rejected += len(rejects)
        self.messages += [r.message() for r in rejects[: max(0, 20 - len(self.messages))]]

    def line(self) -> str:
        text = (f"{self.source}: {self.files} file(s), {self.skipped_files} already ingested, "
                f"{self.records_in} records in, {self.rejected} rejected, {self.written} flow "
                f"records written in {self.seconds:.2f} s")
        if self.pending_bytes:
            text += f"; {self.pending_bytes} bytes of an unfinished last line left for later"
        return text


def _noop(_file: str, _done: int, _total: int) -> None:
    pass


def ingest_pcap(paths: Iterable[str | os.PathLike[str]], store: Store, builder: FlowBuilder,
                interval: int = 300, progress: Progress = _noop,
                wait: float | None = None) -> IngestSummary:
    summary, started = IngestSummary("pcap"), time.monotonic()
    with store.writer(wait) as w:
        for path in map(Path, paths):
            pos, size = w.position(path), path.stat().st_size
            if pos.complete:
                # A capture is ingested whole: one that grew since (tcpdump still writing)
                # is not re-read, which would count its first part twice.
                summary.skipped_files += 1
                if size != pos.offset:
                    summary.messages.append(
                        f"{path}: already ingested at {pos.offset} bytes, now {size}; captures "
                        "are ingested whole once (rotate with tcpdump -G/-C and ingest the "
                        "closed files)")
                continue
            summary.files += 1
            buffer = _SegmentBuffer(builder, w)
            for batch in read_pcap(path, name=str(path), interval=interval):
                summary.records_in += batch.packets
                summary.note(batch.rejects)
                w.add_rejects("pcap", batch.rejects)
                buffer.add(batch.segments, batch.dns)
                progress(str(path), batch.bytes_read, size)
            summary.written += buffer.flush_all()
            w.set_position(path, pos, size, complete=True, collector="pcap")
            w.commit()
    summary.seconds = time.monotonic() - started
    return summary


class _SegmentBuffer:
    """Holds a file's segments so each interval is aggregated in one piece; flushes the
    older intervals when it grows past ``SEGMENT_BUFFER_ROWS`` (bounded memory)."""

    def __init__(self, builder: FlowBuilder, writer: Writer) -> None:
        self.builder, self.writer = builder, writer
        self.segments: list[pa.Table] = []
        self.dns: list[pa.Table] = []
        self.rows = 0
        self.written = 0

    def add(self, segments: pa.Table, dns: pa.Table) -> None:
        if dns.num_rows:
            self.dns.append(dns)
        if segments.num_rows:
            self.segments.append(segments)
            self.rows += segments.num_rows
        if self.rows > SEGMENT_BUFFER_ROWS:
            self._flush(keep_latest=True)

    def flush_all(self) -> int:
        return self._flush(keep_latest=False)

    def _flush(self, keep_latest: bool) -> int:
        if not self.segments:
            return 0
        table = pa.concat_tables(self.segments)
        dns = pa.concat_tables(self.dns) if self.dns else DNS.empty_table()
        keep = table.slice(0, 0)
        if keep_latest:
            latest = pc.max(table["start_time"])
            keep = table.filter(pc.equal(table["start_time"], latest))
            table = table.filter(pc.less(table["start_time"], latest))
        flows = self.builder.build(table, dns)
        written = self.writer.add_flows(flows, self.builder.host)
        self.segments = [keep] if keep.num_rows else []
        self.rows = keep.num_rows
        self.written += written
        return self.written


def ingest_calico(paths: Iterable[str | os.PathLike[str]], store: Store,
                  host: str | None = None, progress: Progress = _noop,
                  wait: float | None = None, batch_lines: int = 200_000) -> IngestSummary:
    summary, started = IngestSummary("calico"), time.monotonic()
    with store.writer(wait) as w:
        for path in map(Path, paths):
            pos = w.position(path)
            size = path.stat().st_size
            if pos.offset >= size:
                summary.skipped_files += 1
                continue
            summary.files += 1
            end = pos.offset
            with open(path, "rb") as f:
                for batch in read_calico_log(f, name=str(path), start_offset=pos.offset,
                                             host=host, batch_lines=batch_lines):
                    summary.records_in += batch.lines
                    summary.note(batch.rejects)
                    w.add_rejects("calico", batch.rejects)
                    summary.written += w.add_flows(batch.table, host or "calico")
                    end = batch.end_offset
                    w.set_position(path, pos, end, collector="calico")
                    w.commit()  # data and position together: exactly once
                    pos = w.position(path)
                    progress(str(path), end, size)
            summary.pending_bytes += size - end
    summary.seconds = time.monotonic() - started
    return summary


def ingest_conntrack(paths: Iterable[str | os.PathLike[str]], store: Store,
                     builder: FlowBuilder, interval: int = 300,
                     times: Sequence[datetime] | None = None, progress: Progress = _noop,
                     wait: float | None = None) -> IngestSummary:
    """Snapshots are taken at ``times`` (default: each file's modification time) and
    ingested in time order."""
    summary, started = IngestSummary("conntrack"), time.monotonic()
    files = [Path(p) for p in paths]
    stamps = list(times) if times else [
        datetime.fromtimestamp(p.stat().st_mtime, UTC) for p in files]
    with store.writer(wait) as w:
        fresh = []
        for path, stamp in sorted(zip(files, stamps, strict=True), key=lambda x: x[1]):
            pos = w.position(path)
            if pos.complete:
                summary.skipped_files += 1
                continue
            snap = parse_conntrack(path.read_text(errors="replace"), source=str(path),
                                   time=stamp)
            summary.files += 1
            summary.records_in += snap.entries.num_rows
            summary.note(snap.rejects)
            w.add_rejects("conntrack", snap.rejects)
            fresh.append((path, pos, snap))
            progress(str(path), 1, 1)
        if fresh:
            previous = _previous_snapshot(store, builder.host)
            table = segments([s for _, _, s in fresh], interval=interval, previous=previous)
            summary.written += w.add_flows(builder.build(table, DNS.empty_table()),
                                           builder.host)
            for path, pos, _ in fresh:
                w.set_position(path, pos, path.stat().st_size, complete=True,
                               collector="conntrack")
            _keep_snapshot(w, builder.host, fresh[-1][2])
            w.commit()
    summary.seconds = time.monotonic() - started
    return summary


def _previous_snapshot(store: Store, host: str) -> Snapshot | None:
    path = store.state / f"conntrack-{host}.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    when = datetime.fromisoformat(meta[b"tierflow.snapshot_time"].decode())
    return Snapshot(time=when, entries=table.replace_schema_metadata(None), rejects=[],
                    source=meta.get(b"tierflow.source", b"").decode())


def _keep_snapshot(w: Writer, host: str, snap: Snapshot) -> None:
    entries = snap.entries
    meta = {b"tierflow.snapshot_time": snap.time.isoformat().encode(),
            b"tierflow.source": snap.source.encode()}
    w.stage_file(f"_state/conntrack-{host}.parquet",
                 lambda path: pq.write_table(entries.replace_schema_metadata(meta), path))

