"""Read a pcap or pcapng capture into connection segments and DNS answers, in batches.

>>> for batch in read_pcap("node.pcap", interval=15):  # doctest: +SKIP
...     store(batch.segments, batch.dns); keep_aside(batch.rejects)

The pipeline, one chunk (``chunk_bytes``) at a time so memory stays bounded on captures
larger than RAM:

* ``ingest.pcapfile`` / ``ingest.pcapng`` frame the records (the only per-record Python);
* ``ingest.packets`` decodes link, IP and transport headers with numpy gathers;
* ``ingest.connections`` rebuilds bidirectional connections and cuts them into
  epoch-aligned intervals (rows of ``ingest.schema.SEGMENTS``);
* ``ingest.dns`` reads the DNS responses (rows of ``ingest.schema.DNS``).

Bytes are counted at the IP layer, as conntrack and Calico count them. A pcap cannot see
DNAT, so ``orig_dst_*`` stay null. Bad input never stops the read: it becomes a
``Reject`` in the batch where it was met.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from ingest.connections import ConnectionTracker, Timeouts
from ingest.dns import Answers, DnsError, dns_table
from ingest.packets import decode
from ingest.pcapfile import iter_frames
from ingest.schema import DNS, Reject

__all__ = ["CaptureBatch", "Timeouts", "read_pcap"]

_LINUX = Timeouts()  # frozen, so one shared default is safe


@dataclass
class CaptureBatch:
    """What one chunk of a capture gave.

    ``segments`` holds the connection-interval rows that became final during this chunk
    (each appears in exactly one batch of a read); ``packets`` counts the packet records
    read in this chunk, IP or not; ``skipped`` the frames that were not IP (ARP, LLDP);
    ``bytes_read`` the file bytes consumed so far.
    """

    segments: pa.Table  # ingest.schema.SEGMENTS
    dns: pa.Table  # ingest.schema.DNS
    rejects: list[Reject]
    packets: int
    skipped: int
    bytes_read: int


def read_pcap(source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None,
              interval: int = 300, timeouts: Timeouts = _LINUX,
              chunk_bytes: int = 64 << 20) -> Iterator[CaptureBatch]:
    """Yield a ``CaptureBatch`` per chunk of the capture at ``source`` (a path or a binary
    file object, which is left open), then one more with the connections still open at
    the end (if any).

    ``name`` is the source named in rejects (default: the path, or the file object's
    ``name``); ``interval`` the flush interval in seconds; a connection's ``conn_id`` is
    unique within one call.
    """
    if interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds (got {interval!r})")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be a positive number of bytes (got {chunk_bytes!r})")
    owned = isinstance(source, str | os.PathLike)
    with _opened(source) as stream:
        label = name or _name_of(source)
        tracker = ConnectionTracker(interval, timeouts)
        parsed: dict[bytes, Answers | DnsError] = {}  # DNS responses seen in this read
        bytes_read = 0
        for frames in iter_frames(stream, label, chunk_bytes, mapped=owned):
            packets = decode(frames, label)
            segments = tracker.feed(packets)
            dns, dns_rejects = dns_table(packets, label, tracker.known, parsed)
            bytes_read = frames.bytes_read
            yield CaptureBatch(segments=segments, dns=dns, rejects=packets.rejects + dns_rejects,
                               packets=frames.records, skipped=packets.skipped,
                               bytes_read=bytes_read)
        rest = tracker.finish()
        if rest.num_rows:
            yield CaptureBatch(segments=rest, dns=DNS.empty_table(), rejects=[], packets=0,
                               skipped=0, bytes_read=bytes_read)


@contextlib.contextmanager
def _opened(source: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def _name_of(source: str | os.PathLike[str] | BinaryIO) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))
