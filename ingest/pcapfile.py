"""Framing of pcap and pcapng files: where each packet's bytes are, when, and on which link.

``iter_frames`` detects the format from the first four bytes and yields ``Frames`` chunk by
chunk. Only the record headers are walked (pcap: by numpy walkers in lockstep, see
``_lockstep``; pcapng: one ``unpack_from`` per block); every per-packet field after that is
read with numpy gathers. The chunk buffer is reused, so a consumer must be done with one
``Frames`` before it asks for the next.

Bad framing never raises: it becomes a ``Reject`` and the read goes on where the file can
still be framed. Classic pcap has no resync marker, so a truncated last record or an absurd
length ends the read; a record longer than the snaplen is skipped by its length.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from ingest import pcapng
from ingest.frames import HEAD, MAX_CAPLEN, Frames, Source, chunks_of, field, window
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
        offs, stop = _walk(chunks, off, header)
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


def _walk(chunks: Source, off: int, header: _Header) -> tuple[np.ndarray, int]:
    """Offsets of the whole records in ``buf[off:end]`` and the offset after the last.

    Record ``i + 1`` starts where record ``i``'s caplen says: a chain that only a walk
    can follow. A big chunk is walked by ``_lockstep``; a small one (or what the lockstep
    walk could not follow) by ``_chain``, one header read per record. Both stop when a
    header does not fit before ``end``; lengths are checked in bulk afterwards.
    """
    end = chunks.end
    with memoryview(chunks.buf)[:end] as view:
        walked = _lockstep(chunks.array(), view, off, end, header)
        if walked is None:
            chain, last = _chain(view, off, end + 1, header.caplen_at)
            walked = np.frombuffer(chain, dtype=np.int64) if chain else _NONE, last
    offs, stop = walked  # ``stop``'s header is not all there
    if stop > end:  # and the record before it ends past the buffer
        offs, stop = offs[:-1], int(offs[-1])
    return offs, stop


_NONE = np.zeros(0, dtype=np.int64)


def _chain(view: memoryview, off: int, bound: int,
           caplen_at: Callable[[memoryview, int], tuple[int]]) -> tuple[array[int], int]:
    """The records from ``off`` on that start before ``bound`` and whose header ``view``
    holds, and the offset after the last. The hot loop of the Python walk: one header
    read per record, into an ``array`` numpy can share without converting it."""
    offs = array("q")
    append = offs.append
    try:
        while off < bound:
            append(off)
            off += 16 + caplen_at(view, off + 8)[0]
    except struct.error:  # the header at ``off`` is not all there
        off = offs.pop()
    return offs, off


# The lockstep walk: up to _WALKERS walkers, each given a stretch of at least _STRETCH
# bytes, find their first record header within _SYNC bytes of its start; they walk in
# lockstep while at least _BUSY of them have records left in their stretch.
_WALKERS, _SYNC, _STRETCH, _BUSY = 512, 2048, 16384, 32


def _lockstep(buf: np.ndarray, view: memoryview, off: int, end: int,
              header: _Header) -> tuple[np.ndarray, int] | None:
    """``_chain`` over ``buf[off:end]`` by many walkers at once (None when it is too small).

    The Python walk waits on memory at every record. Here the chunk is cut into
    stretches; in each, the first plausible record header (caplen <= original length <=
    the length limit, a time within 18 hours of the chunk's first record) starts a walker,
    and all walkers take one step per numpy operation, so their memory reads overlap.
    ``_chain`` finishes the stretches of the last few walkers. The result is exact
    whatever the guesses: walker 0 starts at ``off``, and each later walker's records are
    only used from the record where the true chain (the walker before it) meets it; where
    it does not, ``_chain`` walks that stretch (``_stitch``).
    """
    n = min(_WALKERS, (end - off) // _STRETCH)
    if n < _BUSY:
        return None
    u32 = np.ndarray(shape=(len(buf) - 3,), dtype=header.order + "u4", buffer=buf,
                     strides=(1,))
    stretch = (end - off) // n
    first = off + stretch

    def near(at: int) -> np.ndarray:  # the uint32 at _SYNC offsets from each stretch's start
        return np.lib.stride_tricks.as_strided(u32[at:], shape=(n - 1, _SYNC),
                                               strides=(stretch, 1))

    since = np.uint32((int(u32[off]) - (1 << 16)) % (1 << 32))
    plausible = ((near(first + 8) <= near(first + 12)) & (near(first + 12) <= header.limit)
                 & (near(first) - since < (1 << 17)))
    found = plausible.any(axis=1)  # a stretch without one is left to the walker before
    starts = np.concatenate([[off], (first + stretch * np.arange(n - 1)
                                     + plausible.argmax(axis=1))[found]])
    if len(starts) < _BUSY:
        return None
    limits = np.minimum(np.append(starts[1:], end), end - 11)  # past end - 12: no header
    caplen, top, pos = u32[8:], end + 1, starts
    steps = [pos]
    while True:
        for _ in range(8):  # a walker past its limit walks on, harmlessly, up to ``top``
            pos = np.minimum(pos + caplen[pos] + 16, top)
            steps.append(pos)
        if np.count_nonzero(pos < limits) < _BUSY:
            break
    walks, bounds, exits = _finish(view, np.stack(steps, axis=1), limits, header.caplen_at)
    if (exits[:-1] == starts[1:]).all():  # every walker met the one before it
        return walks, int(exits[-1])
    return _stitch(view, walks, bounds, exits, limits, off, header.caplen_at)


def _finish(view: memoryview, steps: np.ndarray, limits: np.ndarray,
            caplen_at: Callable[[memoryview, int], tuple[int]],
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each walker's records before its limit, one walker after the other (walker ``k``'s
    are ``walks[bounds[k]:bounds[k + 1]]``), and its first step past its limit; a walker
    the lockstep left short of its limit is finished by ``_chain``."""
    mine = steps < limits[:, None]
    count = mine.sum(axis=1)
    walks = steps[mine]
    exits = steps[np.arange(len(steps)), np.minimum(count, steps.shape[1] - 1)]
    short = np.flatnonzero(count == steps.shape[1])
    if len(short):
        parts, done, ends = [], 0, np.cumsum(count)
        for k in short.tolist():
            chain, exits[k] = _chain(view, int(steps[k, -1]), int(limits[k]), caplen_at)
            parts += [walks[done:ends[k]], np.frombuffer(chain, dtype=np.int64)[1:]]
            count[k] += len(chain) - 1
            done = ends[k]
        walks = np.concatenate([*parts, walks[done:]])
    return walks, np.concatenate([[0], np.cumsum(count)]), exits


def _stitch(view: memoryview, walks: np.ndarray, bounds: np.ndarray, exits: np.ndarray,
            limits: np.ndarray, off: int,
            caplen_at: Callable[[memoryview, int], tuple[int]]) -> tuple[np.ndarray, int]:
    """The true chain from ``off`` through the walks: each walk from where the chain
    meets it, or a ``_chain`` over the stretch where it does not."""
    parts, at = [], off
    for k, limit in enumerate(limits.tolist()):
        if at >= limit:  # a record reaches past this whole stretch
            continue
        walk = walks[bounds[k]:bounds[k + 1]]
        i = int(np.searchsorted(walk, at))
        if i < len(walk) and walk[i] == at:
            parts.append(walk[i:])
            at = int(exits[k])
        else:
            chain, at = _chain(view, at, limit, caplen_at)
            parts.append(np.frombuffer(chain, dtype=np.int64) if chain else _NONE)
    return np.concatenate(parts), at


class _Header:
    """What the pcap file header says, and how records are read with it."""

    def __init__(self, name: str, order: str, divisor: int, snaplen: int, link: int) -> None:
        self.name, self.order, self.divisor = name, order, divisor
        self.snaplen, self.link = snaplen, link
        self.limit = max(snaplen, MAX_CAPLEN)
        self.caplen_at = struct.Struct(order + "I").unpack_from

    def frames(self, chunks: Source, rec: np.ndarray, number: int) -> tuple[Frames, int | None]:
        """Frames for the records at ``rec``; the second value is the buffer offset where
        reading must stop (an absurd caplen made the rest unframeable), else None.

        One gather reads each record header with the first ``HEAD`` bytes of its frame.
        """
        buf = chunks.array()
        head = window(buf, rec, 16 + HEAD)
        caplen = field(head, 8, self.order + "u4").astype(np.int64)
        numbers = number + np.arange(len(rec), dtype=np.int64)
        rejects: list[Reject] = []
        fatal: int | None = None
        bad = np.flatnonzero(caplen > self.limit)
        if len(bad):  # the walk went on past a garbage length: nothing after it is framed
            i = int(bad[0])
            fatal = int(rec[i])
            rejects.append(self.absurd(number + i, chunks.base + fatal, int(caplen[i])))
            rec, head, caplen, numbers = rec[:i], head[:i], caplen[:i], numbers[:i]
        sec = field(head, 0, self.order + "u4").astype(np.int64)
        frac = field(head, 4, self.order + "u4").astype(np.int64)
        frames = Frames(buf=buf, data=rec + 16, caplen=caplen, ts_us=sec * 1_000_000 +
                        frac // self.divisor, link=np.full(len(rec), self.link, np.int32),
                        number=numbers, where=chunks.base + rec, rejects=rejects,
                        records=len(rec) + (fatal is not None), head=head[:, 16:])
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
