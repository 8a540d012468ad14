"""Framing of pcap and pcapng files: where each packet's bytes are, when, and on which link.

``iter_frames`` detects the format from the first four bytes and yields ``Frames`` chunk by
chunk. Only the record headers are walked in Python (one ``unpack_from`` per record); every
per-packet field after that is read with numpy gathers. The chunk buffer is reused, so a
consumer must be done with one ``Frames`` before it asks for the next.

Bad framing never raises: it becomes a ``Reject`` and the read goes on where the file can
still be framed. Classic pcap has no resync marker, so a truncated last record or an absurd
length ends the read; a record longer than the snaplen is skipped by its length.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from ingest import pcapng
from ingest.frames import MAX_CAPLEN, Buffer, Frames, Source, chunks_of, field, window
from ingest.schema import Reject

__all__ = ["iter_frames"]

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1), b"\xa1\xb2\xc3\xd4": (">", 1),  # microseconds
    b"\x4d\x3c\xb2\xa1": ("<", 1000), b"\xa1\xb2\x3c\x4d": (">", 1000),  # nanoseconds
}
_MAGICS = "a pcap (a1b2c3d4 or a1b23c4d, either byte order) or pcapng (0a0d0d0a) file"


def iter_frames(stream: BinaryIO, name: str, chunk_bytes: int,
                mapped: bool = False) -> Iterator[Frames]:
    """Yield the packet records of a pcap or pcapng ``stream`` chunk by chunk; ``mapped``
    maps a regular file instead of reading it (see ``frames.MappedChunks``).

    >>> sum(len(f) for f in iter_frames(open("x.pcap", "rb"), "x.pcap", 64 << 20))  # doctest: +SKIP
    1000
    """
    chunks = chunks_of(stream, max(chunk_bytes, 4096), mapped)
    chunks.refill(0)
    head = bytes(chunks.buf[:min(4, chunks.end)])
    if head in _PCAP_MAGIC:
        yield from _pcap(chunks, name)
    elif head == pcapng.SHB_TYPE:
        yield from pcapng.iter_pcapng(chunks, name)
    else:
        value = head.hex() if head else "empty file"
        yield Frames.empty(chunks.array(), [Reject(name, "byte 0", "magic", value, _MAGICS)], 0)


def _pcap(chunks: Source, name: str) -> Iterator[Frames]:
    """Classic pcap: a 24-byte file header, then 16-byte record headers and data."""
    if chunks.end < 24:
        reject = Reject(name, "byte 0", "file header", f"{chunks.end} bytes", "24 bytes")
        yield Frames.empty(chunks.array(), [reject], chunks.end)
        return
    order, divisor = _PCAP_MAGIC[bytes(chunks.buf[:4])]
    snaplen, link = struct.unpack_from(order + "II", chunks.buf, 16)
    header = _Header(name, order, divisor, snaplen, link & 0x0FFFFFFF)  # high bits: FCS flags
    off, number = 24, 1
    while True:
        offs, stop = _walk(chunks.buf, off, chunks.end, header.caplen_at)
        frames, fatal = header.frames(chunks, offs, number)
        number += frames.records
        if fatal is None:
            fatal = header.absurd_next(chunks, stop, number, frames.rejects)
            frames.records += fatal is not None  # the absurd record is counted, as above
        frames.bytes_read = chunks.base + (stop if fatal is None else fatal)
        yield frames
        if fatal is not None:
            return
        if not chunks.refill(stop):
            if chunks.end:  # bytes left over (now at 0) that do not make a whole record
                yield Frames.empty(chunks.array(), [Reject(
                    name, f"packet {number} at byte {chunks.base}", "record",
                    f"{chunks.end} bytes before the end of the file",
                    "a 16-byte record header and caplen bytes of data")], chunks.base)
            return
        off = 0


def _walk(buf: Buffer, off: int, end: int,
          caplen_at: Callable[[memoryview, int], tuple[int]]) -> tuple[list[int], int]:
    """Offsets of the whole records in ``buf[off:end]`` and the offset after the last.

    The hot loop: one header read per record and nothing else. It stops when a header
    does not fit before ``end`` (``struct.error``); lengths are checked in bulk afterwards.
    """
    offs: list[int] = []
    append = offs.append
    with memoryview(buf)[:end] as view:
        try:
            while True:
                append(off)
                off += 16 + caplen_at(view, off + 8)[0]
        except struct.error:
            pass
    stop = offs.pop()  # its header is not all there
    if stop > end:  # and the record before it ends past the buffer
        stop = offs.pop()
    return offs, stop


class _Header:
    """What the pcap file header says, and how records are read with it."""

    def __init__(self, name: str, order: str, divisor: int, snaplen: int, link: int) -> None:
        self.name, self.order, self.divisor = name, order, divisor
        self.snaplen, self.link = snaplen, link
        self.limit = max(snaplen, MAX_CAPLEN)
        self.caplen_at = struct.Struct(order + "I").unpack_from

    def frames(self, chunks: Source, offs: list[int], number: int) -> tuple[Frames, int | None]:
        """Frames for the records at ``offs``; the second value is the buffer offset where
        reading must stop (an absurd caplen made the rest unframeable), else None."""
        buf = chunks.array()
        rec = np.array(offs, dtype=np.int64)
        head = window(buf, rec, 16)
        caplen = field(head, 8, self.order + "u4").astype(np.int64)
        numbers = number + np.arange(len(rec), dtype=np.int64)
        rejects: list[Reject] = []
        fatal: int | None = None
        bad = np.flatnonzero(caplen > self.limit)
        if len(bad):  # the walk went on past a garbage length: nothing after it is framed
            i = int(bad[0])
            rejects.append(self.absurd(number + i, chunks.base + offs[i], int(caplen[i])))
            fatal = offs[i]
            rec, head, caplen, numbers = rec[:i], head[:i], caplen[:i], numbers[:i]
        sec = field(head, 0, self.order + "u4").astype(np.int64)
        frac = field(head, 4, self.order + "u4").astype(np.int64)
        frames = Frames(buf=buf, data=rec + 16, caplen=caplen, ts_us=sec * 1_000_000 +
                        frac // self.divisor, link=np.full(len(rec), self.link, np.int32),
                        number=numbers, where=chunks.base + rec, rejects=rejects,
                        records=len(rec) + (fatal is not None))
        if self.snaplen and (caplen > self.snaplen).any():
            over = caplen > self.snaplen
            rejects += [Reject(self.name, f"packet {frames.number[i]} at byte "
                               f"{frames.where[i]}", "caplen", str(caplen[i]),
                               f"at most the snaplen {self.snaplen}")
                        for i in np.flatnonzero(over)]
            frames.take(~over)
        return frames, fatal

    def absurd_next(self, chunks: Source, stop: int, number: int,
                    rejects: list[Reject]) -> int | None:
        """The walk stopped at a record that does not fit the buffer: if its caplen is
        absurd, reject it and return where reading stops; else None (read more)."""
        if stop + 16 > chunks.end:
            return None
        (caplen,) = self.caplen_at(chunks.buf, stop + 8)
        if caplen <= self.limit:
            return None
        rejects.append(self.absurd(number, chunks.base + stop, caplen))
        return stop

    def absurd(self, number: int, where: int, caplen: int) -> Reject:
        return Reject(self.name, f"packet {number} at byte {where}", "caplen", str(caplen),
                      f"at most {self.limit}; the rest of the file cannot be framed")
