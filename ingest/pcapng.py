"""Framing of pcapng files (draft-ietf-opsawg-pcapng): sections, interfaces and packets.

Understood blocks: Section Header (either byte order; a new section resets the
interfaces), Interface Description (link type, snaplen, ``if_tsresol``, ``if_tsoffset``),
Enhanced Packet, Simple Packet (no timestamp: it takes the time of the packet before it)
and the obsolete Packet Block. Other blocks are skipped. Enhanced Packet Blocks are walked
in a tight loop and decoded in bulk; the others go through ``_Section.block``.

A block whose length is not a multiple of 4, not repeated at its end, too short or
longer than ``BLOCK_LIMIT`` ends the read with one ``Reject``: the blocks after it cannot
be found.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ingest.frames import MAX_CAPLEN, Buffer, Frames, Source, window
from ingest.frames import field as column
from ingest.schema import Reject

__all__ = ["BLOCK_LIMIT", "SHB_TYPE", "iter_pcapng"]

SHB_TYPE = b"\x0a\x0d\x0d\x0a"
BLOCK_LIMIT = 16 << 20  # no sane block is longer; a longer length is garbage
_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
# What _Section.block returns instead of the next offset: the block is not all in the
# buffer yet; reading ends here; a new section starts and the packets before it go first.
_MORE, _DONE, _FLUSH = -1, -2, -3


@dataclass(frozen=True)
class _Interface:
    link: int
    snaplen: int
    tsresol: int = 6  # if_tsresol: high bit clear → 10^-v s, set → 2^-v s
    tsoffset: int = 0  # if_tsoffset, seconds

    def to_us(self, raw: np.ndarray) -> np.ndarray:
        """Timestamps in this interface's units (uint64) → int64 microseconds."""
        exp = self.tsresol & 0x7F
        if not self.tsresol & 0x80 and exp >= 6:
            us = raw // np.uint64(10 ** (exp - 6))
        elif not self.tsresol & 0x80:
            us = raw * np.uint64(10 ** (6 - exp))
        else:
            drop = max(0, exp - 43)  # keeps frac * 10^6 inside 64 bits
            frac = (raw & np.uint64((1 << exp) - 1)) >> np.uint64(drop)
            us = ((raw >> np.uint64(exp)) * np.uint64(1_000_000)
                  + ((frac * np.uint64(1_000_000)) >> np.uint64(exp - drop)))
        return us.astype(np.int64) + self.tsoffset * 1_000_000


@dataclass
class _Section:
    """One section's byte order and interfaces, and what was framed but not yet yielded:
    packet blocks and rejects, each with its buffer offset."""

    name: str
    order: str = "<"
    interfaces: list[_Interface] = field(default_factory=list)
    epbs: list[int] = field(default_factory=list)  # Enhanced Packet Blocks
    # Simple and obsolete Packet Blocks: block, data, caplen, room for data, interface, ts
    others: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    rejects: list[tuple[int, Reject]] = field(default_factory=list)

    def head_at(self) -> Callable[[Buffer, int], tuple[int, int]]:
        return struct.Struct(self.order + "II").unpack_from

    def block(self, chunks: Source, off: int) -> int:
        """Handle the block at ``off``; return the next offset, or ``_MORE``, ``_DONE`` or
        ``_FLUSH`` (see above)."""
        buf, end = chunks.buf, chunks.end
        if off + 12 > end:
            return self.truncated(chunks, off, 12)
        magic = bytes(buf[off + 8:off + 12])
        is_shb = bytes(buf[off:off + 4]) == SHB_TYPE
        if is_shb and magic not in _ORDER:
            return self.fatal(chunks.base + off, "byte-order magic", magic.hex(),
                              "1a2b3c4d in either byte order", off)
        if is_shb and (self.epbs or self.others):
            return _FLUSH
        order = _ORDER[magic] if is_shb else self.order
        btype, blen = struct.unpack_from(order + "II", buf, off)
        if blen < 12 or blen % 4 or blen > BLOCK_LIMIT or (btype == _EPB and blen < 32):
            return self.fatal(chunks.base + off, "block length", str(blen),
                              "a multiple of 4, at least 12 (32 for an enhanced packet "
                              f"block) and at most {BLOCK_LIMIT}", off)
        if off + blen > end:
            return self.truncated(chunks, off, blen)
        trailer = struct.unpack_from(order + "I", buf, off + blen - 4)[0]
        if trailer != blen:
            return self.fatal(chunks.base + off, "block length",
                              f"{blen} at the start, {trailer} at the end",
                              "the same length at both ends of the block", off)
        if is_shb:
            self.order, self.interfaces = order, []
        elif btype == _IDB:
            self.interfaces.append(self.interface(bytes(buf[off:off + blen])))
        elif btype in (_SPB, _PB, _EPB):
            self.packet(buf, off, btype, blen)
        return off + int(blen)

    def packet(self, buf: Buffer, off: int, btype: int, blen: int) -> None:
        if btype == _SPB:  # interface 0, no timestamp, caplen implied by the block
            (wirelen,) = struct.unpack_from(self.order + "I", buf, off + 8)
            self.others.append((off, off + 12, min(wirelen, blen - 16), blen - 16, 0, 0))
        elif btype == _PB:
            iface, _drops, hi, lo, caplen = struct.unpack_from(self.order + "HHIII", buf, off + 8)
            self.others.append((off, off + 28, caplen, blen - 32, iface, (hi << 32) | lo))
        else:  # an Enhanced Packet Block the fast walk left to us
            self.epbs.append(off)

    def interface(self, block: bytes) -> _Interface:
        link, _reserved, snaplen = struct.unpack_from(self.order + "HHI", block, 8)
        tsresol, tsoffset, pos = 6, 0, 16
        while pos + 4 <= len(block) - 4:  # options: code, length, value padded to 4
            code, length = struct.unpack_from(self.order + "HH", block, pos)
            if code == 0:
                break
            if code == 9 and length >= 1:
                tsresol = block[pos + 4]
            elif code == 14 and length >= 8:
                (tsoffset,) = struct.unpack_from(self.order + "q", block, pos + 4)
            pos += 4 + (length + 3) // 4 * 4
        return _Interface(link, snaplen, tsresol, tsoffset)

    def truncated(self, chunks: Source, off: int, need: int) -> int:
        if not chunks.eof:
            return _MORE
        if off < chunks.end:
            self.rejects.append((off, Reject(
                self.name, f"block at byte {chunks.base + off}", "block",
                f"{chunks.end - off} bytes before the end of the file", f"{need} bytes")))
        return _DONE

    def fatal(self, where: int, what: str, value: str, expected: str, off: int) -> int:
        self.rejects.append((off, Reject(self.name, f"block at byte {where}", what, value,
                                         expected + "; the blocks after it cannot be found")))
        return _DONE


def iter_pcapng(chunks: Source, name: str) -> Iterator[Frames]:
    """Yield the packets of a pcapng file chunk by chunk (see the module docstring)."""
    section = _Section(name)
    off, number = 0, 1
    while True:
        offs, off = _walk(chunks.buf, off, chunks.end, section.head_at())
        section.epbs += offs
        nxt = section.block(chunks, off)
        if nxt >= 0:
            off = nxt
            continue
        frames, fatal = _frames(chunks, section, number)
        number += frames.records
        frames.bytes_read = chunks.base + (off if fatal is None else fatal)
        yield frames
        if nxt == _DONE or fatal is not None:
            return
        if nxt == _FLUSH:  # the new section's header is read on the next turn
            continue
        if not chunks.refill(off):
            section.block(chunks, 0)  # what is left (now at 0) is a truncated block
            if section.rejects:
                yield Frames.empty(chunks.array(), [r for _, r in section.rejects],
                                   chunks.base + off)
            return
        off = 0


def _walk(buf: Buffer, off: int, end: int,
          head_at: Callable[[Buffer, int], tuple[int, int]]) -> tuple[list[int], int]:
    """Offsets of the whole Enhanced Packet Blocks from ``off`` on, up to the first block
    of another kind, of a bad length or not all in ``buf[:end]``; and where it stopped.

    The hot loop; the length repeated at each block's end is checked in bulk afterwards.
    """
    offs: list[int] = []
    append = offs.append
    last = end - 8
    while off <= last:
        btype, blen = head_at(buf, off)
        nxt = off + blen
        if btype != _EPB or blen < 32 or blen & 3 or nxt > end:
            break
        append(off)
        off = nxt
    return offs, off


def _frames(chunks: Source, section: _Section, number: int) -> tuple[Frames, int | None]:
    """Frames for the packet blocks the section has collected; the second value is the
    buffer offset of a block whose end length disagrees (reading stops there), else None."""
    buf, order = chunks.array(), section.order + "u4"
    rec = np.array(section.epbs, dtype=np.int64)
    head = window(buf, rec, 28)
    blen = column(head, 4, order).astype(np.int64)
    fatal: int | None = None
    trailer = column(window(buf, rec + blen - 4, 4), 0, order)
    bad = np.flatnonzero(trailer != blen)
    if len(bad):  # the walk went on past it: nothing after it can be trusted
        i = int(bad[0])
        fatal = int(rec[i])
        section.fatal(chunks.base + fatal, "block length",
                      f"{blen[i]} at the start, {trailer[i]} at the end",
                      "the same length at both ends of the block", fatal)
        rec, head, blen = rec[:i], head[:i], blen[:i]
    cols = {"rec": rec, "data": rec + 28, "caplen": column(head, 20, order).astype(np.int64),
            "room": blen - 32, "iface": column(head, 8, order).astype(np.int64),
            "ts": (column(head, 12, order).astype(np.uint64) << np.uint64(32))
            | column(head, 16, order).astype(np.uint64)}
    others = [o for o in section.others if fatal is None or o[0] < fatal]
    if others:
        cols = _merge(cols, others)
    rejects = [(at, r) for at, r in section.rejects if fatal is None or at <= fatal]
    frames = _checked(chunks, section, cols, number, rejects)
    section.epbs, section.others, section.rejects = [], [], []
    return frames, fatal


def _merge(cols: dict[str, np.ndarray], others: list[tuple[int, int, int, int, int, int]],
           ) -> dict[str, np.ndarray]:
    """Add the Simple and obsolete Packet Blocks, in file order."""
    extra = np.array(others, dtype=np.int64).T
    added = {"rec": extra[0], "data": extra[1], "caplen": extra[2], "room": extra[3],
             "iface": extra[4], "ts": extra[5].astype(np.uint64)}
    merged = {k: np.concatenate([v, added[k]]) for k, v in cols.items()}
    order = np.argsort(merged["rec"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def _checked(chunks: Source, section: _Section, cols: dict[str, np.ndarray], number: int,
             rejects: list[tuple[int, Reject]]) -> Frames:
    """Frames from packet columns, without the packets whose interface or length is bad."""
    n = len(cols["rec"])
    numbers = number + np.arange(n, dtype=np.int64)
    where = chunks.base + cols["rec"]
    ifaces = section.interfaces
    known = cols["iface"] < len(ifaces)
    snap = np.array([i.snaplen or MAX_CAPLEN << 8 for i in ifaces] or [0], dtype=np.int64)
    iface = np.where(known, cols["iface"], 0)
    caplen = cols["caplen"]
    over = known & ((caplen > cols["room"]) | (caplen > snap[iface]))
    for i in np.flatnonzero(~known | over):
        at = f"packet {numbers[i]} at byte {where[i]}"
        if not known[i]:
            rejects.append((int(cols["rec"][i]), Reject(
                section.name, at, "interface id", str(cols["iface"][i]),
                f"one of the {len(ifaces)} interfaces described before it")))
        else:
            limit = min(int(cols["room"][i]), int(snap[iface[i]]))
            rejects.append((int(cols["rec"][i]), Reject(
                section.name, at, "caplen", str(caplen[i]),
                f"at most {limit} (the block and the interface snaplen)")))
    ok = known & ~over
    ts_us = np.zeros(n, dtype=np.int64)
    links = np.zeros(n, dtype=np.int32)
    for k in np.unique(iface[ok]):
        sel = ok & (iface == k)
        ts_us[sel] = ifaces[k].to_us(cols["ts"][sel])
        links[sel] = ifaces[k].link
    frames = Frames(buf=chunks.array(), data=cols["data"], caplen=caplen, ts_us=ts_us,
                    link=links, number=numbers, where=where,
                    rejects=[r for _, r in sorted(rejects, key=lambda x: x[0])], records=n)
    if not ok.all():
        frames.take(ok)
    return frames
