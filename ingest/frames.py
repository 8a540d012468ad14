"""The shared pieces of the capture readers: ``Frames``, the chunked byte buffer, and
gathers that read fixed-layout headers at many offsets at once.

A gather reads ``width`` bytes at each of n offsets with ONE numpy fancy-index over a
``V<width>`` view whose stride is one byte, giving an (n, width) matrix; the header fields
are then strided views of that matrix (``field``). This is several times faster than one
gather per byte and is what keeps packet decoding columnar. A gather costs about a cache
miss per offset whatever its width, so the framing gathers each frame's first ``HEAD``
bytes once, and ``FrameBytes`` serves the usual headers from them.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ingest.schema import Reject

__all__ = ["HEAD", "MAX_CAPLEN", "PAD", "Buffer", "Chunks", "FrameBytes", "Frames", "MappedChunks",
           "Source", "chunks_of", "field", "window"]

Buffer = bytearray | memoryview  # a chunk's bytes: copied, or a mapped window

# libpcap's MAXIMUM_SNAPLEN: a longer record is garbage, not a packet.
MAX_CAPLEN = 262144
# Readable slack after the data, so fixed-width gathers at the end of a short last frame
# stay inside the buffer (what they read there is masked by the length checks).
PAD = 1024
# Bytes of each frame gathered up front (``Frames.head``): Ethernet with two VLAN tags, a
# 40-byte IP header and 16 transport bytes fit, so most packets need no other gather. A
# gather costs a cache miss per row whatever its width, so one wide gather beats several.
HEAD = 80


@dataclass
class Frames:
    """The packet records of one chunk, as columns over one shared byte buffer.

    Records that framing rejected are counted in ``records`` but have no row.
    """

    buf: np.ndarray  # uint8; at least PAD readable bytes follow every frame
    data: np.ndarray  # int64 offset of each frame's first link-layer byte in buf
    caplen: np.ndarray  # int64 captured bytes
    ts_us: np.ndarray  # int64 microseconds since the epoch
    link: np.ndarray  # int32 link type (LINKTYPE_*)
    number: np.ndarray  # int64 1-based packet number in the file
    where: np.ndarray  # int64 file offset of the record
    rejects: list[Reject]
    records: int  # packet records in this chunk, rejected ones included
    bytes_read: int = 0  # file bytes consumed so far
    # uint8 (n, HEAD): the HEAD bytes at each ``data`` (garbage past caplen), when the
    # framing gathered them along with the record headers; else None
    head: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def empty(cls, buf: np.ndarray, rejects: list[Reject], bytes_read: int) -> Frames:
        z = np.zeros(0, dtype=np.int64)
        return cls(buf=buf, data=z, caplen=z, ts_us=z, link=np.zeros(0, dtype=np.int32),
                   number=z, where=z, rejects=rejects, records=0, bytes_read=bytes_read)

    def take(self, keep: np.ndarray) -> None:
        """Keep only the rows where the boolean mask ``keep`` is true."""
        for name in ("data", "caplen", "ts_us", "link", "number", "where"):
            setattr(self, name, getattr(self, name)[keep])
        if self.head is not None:
            self.head = self.head[keep]


class Chunks:
    """A file read ``chunk`` bytes at a time into one reused buffer.

    ``base`` is the file offset of ``buf[0]``; ``buf[:end]`` holds valid bytes and at least
    ``PAD`` more bytes are allocated after them.
    """

    def __init__(self, stream: BinaryIO, chunk: int) -> None:
        self.stream, self.chunk = stream, chunk
        self.buf = bytearray(chunk + PAD)
        self.base = self.end = 0
        self.eof = False

    def refill(self, keep: int) -> bool:
        """Drop ``buf[:keep]``, append up to ``chunk`` new bytes; False when none came."""
        rest = self.end - keep
        if rest > self.chunk // 2:  # a record longer than half a chunk: make room
            grown = bytearray(rest + self.chunk + PAD)
            grown[:rest] = self.buf[keep:self.end]
            self.buf = grown
        elif rest and keep:
            self.buf[:rest] = self.buf[keep:self.end]
        self.base += keep
        got, want = 0, len(self.buf) - PAD - rest  # at least half a chunk
        with memoryview(self.buf) as view:
            while got < want:  # pipes and sockets may return short reads
                n = self.stream.readinto(view[rest + got:rest + want])  # type: ignore[attr-defined]
                if not n:
                    self.eof = True
                    break
                got += n
        self.end = rest + got
        return got > 0

    def array(self) -> np.ndarray:
        """The buffer as uint8, without copying."""
        return np.frombuffer(self.buf, dtype=np.uint8)


class MappedChunks:
    """``Chunks`` of a regular file, mapped instead of copied: each chunk is a read-only
    ``mmap`` window, which saves a copy of every byte. The file's last chunk is copied
    into a padded buffer, since a mapping cannot have ``PAD`` bytes past the file's end."""

    def __init__(self, fd: int, chunk: int) -> None:
        self.fd, self.chunk = fd, chunk
        self.buf: Buffer = bytearray(PAD)
        self.base = self.end = 0
        self.eof = False

    def refill(self, keep: int) -> bool:
        """Move the window to start at ``keep``; False when no new bytes came."""
        start = self.base + keep
        size = os.fstat(self.fd).st_size
        stop = min(size, start + max(self.chunk, self.end - keep + self.chunk // 2))
        grew = stop > self.base + self.end
        if stop + PAD <= size:
            aligned = start - start % mmap.ALLOCATIONGRANULARITY
            window = mmap.mmap(self.fd, stop + PAD - aligned, prot=mmap.PROT_READ,
                               offset=aligned)
            self.buf = memoryview(window)[start - aligned:]
        else:
            self.buf = bytearray(stop - start + PAD)
            with memoryview(self.buf) as view:  # read in place: no bytes object to copy
                os.preadv(self.fd, [view[:stop - start]], start)
        self.base, self.end, self.eof = start, stop - start, stop >= size
        return grew

    def array(self) -> np.ndarray:
        """The window as uint8, without copying."""
        return np.frombuffer(self.buf, dtype=np.uint8)


Source = Chunks | MappedChunks  # what the format readers walk


def chunks_of(stream: BinaryIO, chunk: int, mapped: bool) -> Source:
    """Mapped chunks when ``mapped`` and ``stream`` is a regular file read from its start,
    else copied ones (pipes, sockets, in-memory files)."""
    if mapped:
        try:
            fd = stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode) and stream.tell() == 0:
                return MappedChunks(fd, chunk)
        except (OSError, ValueError, AttributeError):
            pass
    return Chunks(stream, chunk)


@dataclass
class FrameBytes:
    """Frames' bytes, for reading their headers: the chunk buffer, where each frame
    starts in it, and each frame's first ``HEAD`` bytes (``Frames.head``)."""

    buf: np.ndarray
    data: np.ndarray
    head: np.ndarray

    def at(self, offset: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` bytes at each buffer ``offset`` as an (n, width) matrix (an offset
        too close to the buffer's end reads its last ``width`` bytes: garbage, masked by
        the length checks). Where most frames have the header at the same place, that is
        a slice of ``head``; only the others are gathered."""
        rel = offset - self.data
        common = int(rel[0]) if len(rel) else 0
        if not (rel == common).all():
            common = int(np.bincount(np.clip(rel, 0, HEAD), minlength=1).argmax())
        if not 0 <= common <= HEAD - width:
            return window(self.buf, np.minimum(offset, len(self.buf) - width), width)
        matrix = self.head[:, common:common + width]
        odd = np.flatnonzero(rel != common)
        if len(odd):
            matrix = matrix.copy()
            matrix[odd] = window(self.buf, np.minimum(offset[odd], len(self.buf) - width),
                                 width)
        return matrix


def window(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each offset in ``at`` as an (n, width) uint8 matrix.

    Offsets must satisfy ``at + width <= len(buf)``.
    """
    view = np.ndarray(shape=(len(buf) - width + 1,), dtype=f"V{width}", buffer=buf,
                      strides=(1,))
    matrix: np.ndarray = view[at].view(np.uint8).reshape(-1, width)
    return matrix


def field(matrix: np.ndarray, offset: int, fmt: str) -> np.ndarray:
    """Column ``offset`` of a ``window`` matrix read as numpy type ``fmt`` (``'>u2'``...).

    The result is a strided view; arithmetic on it makes the contiguous copy.
    """
    width = matrix.shape[1]
    dtype = np.dtype({"names": ["f"], "formats": [fmt], "offsets": [offset], "itemsize": width})
    column: np.ndarray = matrix.view(dtype)["f"][:, 0]
    return column
