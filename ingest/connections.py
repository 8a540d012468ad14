"""Packets → connections → one ``SEGMENTS`` row per connection and flush interval.

A flow is the bidirectional key (protocol, addresses, ports); a connection is a stretch of
one flow's packets. A new connection starts on a flow's first packet, after the previous
one was idle longer than its timeout (``Timeouts``, Linux conntrack's defaults), and on a
TCP SYN (without ACK) once the previous connection is over (FIN from both sides, or RST);
``tshark``'s ``tcp.stream`` splits SYN reuse the same way.

The initiator (``src_*`` of a row) is the sender of the connection's first packet, except
that a first packet that is a SYN+ACK makes its receiver the initiator. Ports are not used
to guess: a capture that starts mid-connection names whoever spoke first.

Rows: one per connection per epoch-aligned interval ``[k × interval, (k+1) × interval)``
from its first packet's interval to its last packet's, with zero counters for the quiet
ones in between (Calico reports every live connection each interval). ``started`` is set in
the first interval when (TCP) the first packet was a SYN or SYN+ACK, or (other protocols)
always; ``completed`` in the last interval when (TCP) FIN was seen from both sides or a RST,
or (others) the connection then stayed idle for its timeout before the capture ended.

Columnar: each packet's flow key is packed exactly into two uint64 words (five with
IPv6), a chunk's packets are sorted once by a hash of them (stable, so time order stays),
the connection boundaries found with vectorised tests, and only the few candidates that
depend on state (long gaps, SYN after FIN/RST) are decided in Python. Per-connection and
per-interval counters are ``reduceat`` sums over runs of the sorted events. Connections
still open at a chunk's end are carried as one pseudo-event each into the next chunk, so
memory is bounded by the number of open connections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from ingest.packets import Packets
from ingest.segmenttable import Conns, Rows, segment_table

__all__ = ["ConnectionTracker", "Timeouts"]

# Event bits: which side spoke, FIN per side, RST, SYN (no ACK), SYN+ACK, carried state.
SEEN_A, SEEN_B, FIN_A, FIN_B, RST, SYN, SYNACK, CARRIED = (np.uint8(1 << i) for i in range(8))
_STATE_BITS = np.uint8(SEEN_A | SEEN_B | FIN_A | FIN_B | RST)
_K = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                             0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                             0xA0761D6478BD642F)]
_PORT_BITS = np.uint64(18)  # a flow-key port + 1: 0 (none) to 131072 (ICMP keys)


@dataclass(frozen=True)
class Timeouts:
    """Idle timeouts in seconds; the defaults are Linux conntrack's
    (``nf_conntrack_tcp_timeout_established`` etc.). ``tcp_closing`` applies once a FIN or
    RST was seen; ``udp_stream`` once the flow was answered."""

    tcp_established: float = 432000
    tcp_closing: float = 120
    udp: float = 30
    udp_stream: float = 120
    icmp: float = 30
    other: float = 600

    def microseconds(self) -> np.ndarray:
        """The six timeouts, in field order, as int64 microseconds."""
        seconds = np.array([self.tcp_established, self.tcp_closing, self.udp, self.udp_stream,
                            self.icmp, self.other], dtype=np.float64)
        return (seconds * 1e6).astype(np.int64)


# Per pv, the index of its timeout in ``Timeouts.microseconds()``: TCP 0 (1 once closing),
# UDP 2 (3 once answered), ICMP (of its own IP version) 4, anything else 5.
_TIMEOUT = np.full(512, 5, dtype=np.int64)
_TIMEOUT[[6, 256 | 6]], _TIMEOUT[[17, 256 | 17]], _TIMEOUT[[1, 256 | 58]] = 0, 2, 4


def timeout_for(pv: np.ndarray, bits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The idle timeout (µs) of connections with protocol ``pv`` and state ``bits``."""
    at = _TIMEOUT[pv]
    closing = (bits & (FIN_A | FIN_B | RST)) != 0
    answered = (bits & (SEEN_A | SEEN_B)) == (SEEN_A | SEEN_B)
    timeouts: np.ndarray = table[at + ((at == 0) & closing) + ((at == 2) & answered)]
    return timeouts


def packet_bits(p: Packets, swap: np.ndarray) -> np.ndarray:
    """Each packet's event bits; ``swap`` marks packets sent by endpoint B."""
    sw = swap.view(np.uint8)
    f = p.flags
    syn = f & 0x12  # SYN and ACK
    bits: np.ndarray = ((SEEN_A << sw) | ((f & 1) << (2 + sw)) | ((f & 4) << 2)
                        | ((syn == 0x02).view(np.uint8) << 5)
                        | ((syn == 0x12).view(np.uint8) << 6))
    return bits


def flow_words(pv: np.ndarray, a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...],
               v6: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """The flow key of each packet (``a``, ``b`` = source, destination (hi, lo, port)) or
    canonical connection (``a`` < ``b`` already) packed exactly into uint64 words, and
    which rows were swapped so that endpoint A is the smaller (address, port).

    Without IPv6 an endpoint is ``lo << 18 | port + 1``, so two words hold the key and
    comparing them orders the endpoints; with IPv6 it takes five.
    """
    if not v6:
        ea = (a[1] << _PORT_BITS) | (a[2] + 1).astype(np.uint64)
        eb = (b[1] << _PORT_BITS) | (b[2] + 1).astype(np.uint64)
        swap = ea > eb
        hi = np.maximum(ea, eb) | (pv.astype(np.uint64) << np.uint64(50))
        return swap, [np.minimum(ea, eb), hi]
    lower = (a[1] < b[1]) | ((a[1] == b[1]) & (a[2] <= b[2]))
    swap = ~((a[0] < b[0]) | ((a[0] == b[0]) & lower))
    ports = ((np.where(swap, b[2], a[2]) + 1).astype(np.uint64)
             | ((np.where(swap, a[2], b[2]) + 1).astype(np.uint64) << _PORT_BITS)
             | (pv.astype(np.uint64) << np.uint64(36)))
    return swap, [np.where(swap, b[0], a[0]), np.where(swap, b[1], a[1]),
                  np.where(swap, a[0], b[0]), np.where(swap, a[1], b[1]), ports]


def flow_keys(words: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The ``Conns.KEYS`` columns packed in ``flow_words``'s ``words`` (two or five)."""
    port = np.uint64((1 << 18) - 1)
    if len(words) == 2:  # as the five IPv6 words: hi parts 0, ports and pv in the fifth
        a, b = words
        zero = np.zeros(len(a), dtype=np.uint64)
        words = [zero, a >> _PORT_BITS, zero, (b >> _PORT_BITS) & np.uint64(0xFFFFFFFF),
                 (a & port) | ((b & port) << _PORT_BITS) | (b >> np.uint64(50) << np.uint64(36))]
    a_hi, a_lo, b_hi, b_lo, ports = words
    return {"pv": (ports >> np.uint64(36)).astype(np.int32), "a_hi": a_hi, "a_lo": a_lo,
            "b_hi": b_hi, "b_lo": b_lo, "pa": (ports & port).astype(np.int32) - 1,
            "pb": ((ports >> _PORT_BITS) & port).astype(np.int32) - 1}


def flow_hash(keys: dict[str, np.ndarray]) -> np.ndarray:
    """A 64-bit hash of the flow key columns (collisions are detected by ``flow_order``).
    Its high bits mix every input bit, which is what ``flow_order`` sorts on."""
    h = np.zeros(len(next(iter(keys.values()))), dtype=np.uint64)
    for i, column in enumerate(keys.values()):
        h ^= column.astype(np.uint64, copy=False)
        h *= _K[i % len(_K)]
    return h


def flow_order(keys: dict[str, np.ndarray], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that groups events by flow, and where each flow starts in it.

    Sorting one uint64 is fast: the hash's high bits with the event index in the low
    bits, so the order is stable. Equal high bits with different keys (astronomically
    rare) are detected exactly, and then the full keys are sorted instead.
    """
    n = len(h)
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    shift = np.uint64(max(n - 1, 1).bit_length())
    low = np.uint64((1 << int(shift)) - 1)
    packed = (h & ~low) | np.arange(n, dtype=np.uint64)
    ranked = pl.Series(packed).sort().to_numpy()
    order = (ranked & low).astype(np.int64)
    top = ranked >> shift
    same = top[1:] == top[:-1]
    for column in keys.values():
        k = column[order]
        if (same & (k[1:] != k[:-1])).any():
            columns = list(keys.values())
            order = np.lexsort([np.arange(n), *columns[::-1]])
            differs = np.zeros(n - 1, dtype=bool)
            for c in columns:
                k = c[order]
                differs |= k[1:] != k[:-1]
            same = ~differs
            break
    return order, np.concatenate([[True], ~same])


def _scalar_timeout(pv: int, bits: int, table: list[int]) -> int:
    """``timeout_for`` for one connection (the Python path for boundary candidates)."""
    proto = pv & 255
    if proto == 6:
        return table[1] if bits & (FIN_A | FIN_B | RST) else table[0]
    if proto == 17:
        return table[3] if bits & SEEN_A and bits & SEEN_B else table[2]
    if (proto == 1 and pv < 256) or (proto == 58 and pv > 255):
        return table[4]
    return table[5]


@dataclass
class _Events:
    """A chunk's events: one pseudo-event per carried connection first, then the packets.

    The flow keys are only packed into ``words``; ``keys`` unpacks them for the few
    events that start a connection."""

    words: dict[str, np.ndarray]  # the flow key, exactly (``flow_words``)
    bits: np.ndarray
    ts: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, p: Packets, ts: np.ndarray, o: Conns) -> _Events:
        v6 = bool((p.pv > 255).any() or (o.keys["pv"] > 255).any())
        swap, words = flow_words(p.pv, (p.src_hi, p.src_lo, p.sport),
                                 (p.dst_hi, p.dst_lo, p.dport), v6)
        bits, length = packet_bits(p, swap), p.ip_len
        if len(o):
            k = o.keys
            _, carried = flow_words(k["pv"], (k["a_hi"], k["a_lo"], k["pa"]),
                                    (k["b_hi"], k["b_lo"], k["pb"]), v6)
            words = [np.concatenate([c, w]) for c, w in zip(carried, words, strict=True)]
            bits = np.concatenate([o.bits | CARRIED, bits])
            ts = np.concatenate([o.last_ts, ts])
            length = np.concatenate([np.zeros(len(o), dtype=np.int64), length])
        return cls({f"w{i}": w for i, w in enumerate(words)}, bits, ts, length)

    def keys(self, at: np.ndarray) -> dict[str, np.ndarray]:
        """The ``Conns.KEYS`` columns of the events ``at``."""
        return flow_keys([w[at] for w in self.words.values()])


class ConnectionTracker:
    """Feed it the ``Packets`` of each chunk in file order; it returns the ``SEGMENTS``
    rows that became final, and ``finish()`` returns the rest."""

    def __init__(self, interval: int, timeouts: Timeouts) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds (got {interval!r})")
        self.interval_us = int(interval) * 1_000_000
        self.timeouts = timeouts.microseconds()
        every = np.arange(512)  # the shortest timeout a flow can have, by pv
        self.shortest = np.minimum(timeout_for(every, np.zeros(512, np.uint8), self.timeouts),
                                   timeout_for(every, np.full(512, _STATE_BITS), self.timeouts))
        self.open = Conns.empty()
        self.next_id = 0
        self.watermark = np.iinfo(np.int64).min  # the latest capture time seen
        self.known: dict[int, str] = {}  # address texts already formatted

    def feed(self, p: Packets) -> pa.Table:
        """The rows this chunk made final: their connection moved on to a later interval,
        ended, or stayed idle past its timeout."""
        if not len(p):
            return self._expire(final=False)
        # Capture time never goes back: a packet stamped earlier than one before it (clocks
        # of two interfaces) counts at the latest time seen.
        ts = np.maximum.accumulate(np.concatenate([[self.watermark], p.ts_us]))[1:]
        self.watermark = int(ts[-1])
        ev = _Events.of(p, ts, self.open)
        order, newflow = flow_order(ev.words, flow_hash(ev.words))
        ts, bits = ev.ts[order], ev.bits[order]
        boundary = self._boundaries(ev.keys(order[newflow])["pv"], newflow, ts, bits)
        start = np.flatnonzero(boundary)
        conns = self._conns(ev.keys(order[start]), p, order, start, ts, bits)
        is_last = np.append(newflow, True)[np.append(start[1:], len(ts))]
        expired = self.watermark - conns.last_ts > timeout_for(conns.keys["pv"], conns.bits,
                                                               self.timeouts)
        rows = self._rows(conns, start, boundary, ts, bits, ev.length[order])
        return self._emit(conns, rows, final=~is_last | expired)

    def finish(self) -> pa.Table:
        """The rows of every connection still open, at the end of the capture."""
        return self._expire(final=True)

    def _boundaries(self, flow_pv: np.ndarray, newflow: np.ndarray, ts: np.ndarray,
                    bits: np.ndarray) -> np.ndarray:
        """Where connections start in the flow-sorted events."""
        n = len(ts)
        fstart = np.flatnonzero(newflow)
        lengths = np.diff(np.append(fstart, n))
        shortest = self.shortest[flow_pv]
        gap = np.diff(ts, prepend=ts[0])
        candidate = gap > np.repeat(shortest, lengths)
        candidate[fstart] = False
        syn = np.flatnonzero(bits & SYN)
        closing = np.flatnonzero(bits & (FIN_A | FIN_B | RST)) if len(syn) else syn
        if len(closing):  # a SYN after this flow saw a FIN or RST
            before = np.searchsorted(closing, syn) - 1  # the last one before each SYN
            last = np.where(before >= 0, closing[np.maximum(before, 0)], -1)
            candidate[syn[last >= fstart[np.searchsorted(fstart, syn, "right") - 1]]] = True
        cands = np.flatnonzero(candidate)
        if not len(cands):
            return newflow
        boundary = newflow.copy()
        boundary[self._decide(cands, fstart, flow_pv, gap, bits)] = True
        return boundary

    def _decide(self, candidates: np.ndarray, fstart: np.ndarray, flow_pv: np.ndarray,
                gap: np.ndarray, bits: np.ndarray) -> list[int]:
        """The candidates that do start a connection, given the state of the connection
        before each (which depends on where the previous accepted boundary was). A flow's
        state is brought up to date from one candidate to the next, so each event is
        looked at once."""
        flow = np.searchsorted(fstart, candidates, "right") - 1
        table = self.timeouts.tolist()
        seen: dict[int, tuple[int, int]] = {}  # flow → (state known up to, state)
        accepted: list[int] = []
        for i, f, pv, idle, syn in zip(candidates.tolist(), flow.tolist(),
                                       flow_pv[flow].tolist(), gap[candidates].tolist(),
                                       (bits[candidates] & SYN).tolist(), strict=True):
            upto, state = seen.get(f) or (int(fstart[f]), 0)
            state |= int(np.bitwise_or.reduce(bits[upto:i]) & _STATE_BITS)
            closed = (state & FIN_A and state & FIN_B) or state & RST
            if idle > _scalar_timeout(pv, state, table) or (syn and closed):
                accepted.append(i)
                state = 0
            seen[f] = (i, state)
        return accepted

    def _conns(self, keys: dict[str, np.ndarray], p: Packets, order: np.ndarray,
               start: np.ndarray, ts: np.ndarray, bits: np.ndarray) -> Conns:
        """Connection-level columns; carried connections keep their id and initiator."""
        o = self.open
        first = order[start]  # event index of each connection's first event
        old = np.flatnonzero(first < len(o))
        at = first[old]
        fb = bits[start]
        conns = Conns(
            keys=keys,
            bits=np.bitwise_or.reduceat(bits, start) & _STATE_BITS,
            conn_id=np.zeros(len(start), dtype=np.int64),
            init=(((fb & SEEN_B) != 0) ^ ((fb & SYNACK) != 0)).astype(np.int8),
            first_ts=ts[start], last_ts=ts[np.append(start[1:], len(ts)) - 1],
            syn_first=(fb & (SYN | SYNACK)) != 0,
            icmp=np.zeros((len(start), 2), dtype=np.int16))
        pkt = np.clip(first - len(o), 0, None)
        conns.icmp[:, 0], conns.icmp[:, 1] = p.icmp_type[pkt], p.icmp_code[pkt]
        for name in ("conn_id", "init", "first_ts", "syn_first", "icmp"):
            getattr(conns, name)[old] = getattr(o, name)[at]
        new = np.flatnonzero(first >= len(o))
        fresh = new[np.argsort(first[new])]  # in packet order (first events are distinct)
        conns.conn_id[fresh] = self.next_id + np.arange(len(fresh))
        self.next_id += len(fresh)
        conns.pending = np.zeros((len(start), 4), dtype=np.int64)
        conns.pending[old] = o.pending[at]  # added to the row their pseudo-event opens
        return conns

    def _rows(self, conns: Conns, start: np.ndarray, boundary: np.ndarray, ts: np.ndarray,
              bits: np.ndarray, length: np.ndarray) -> Rows:
        """One row per connection and interval, quiet intervals included; counters are
        oriented by the initiator. ``started``/``completed`` are set by the caller.

        Rows are runs of the sorted events, so each counter is one ``reduceat``: packets
        and bytes from B, all packets (the run's length, less a carried pseudo-event) and
        all bytes (a pseudo-event has none); the initiator's side then picks fwd/rev."""
        n = len(ts)
        iv = ts // self.interval_us
        opens = boundary.copy()
        opens[1:] |= iv[1:] != iv[:-1]
        rs = np.flatnonzero(opens)
        conn = np.cumsum(boundary[rs]) - 1
        carried = (bits[rs] & CARRIED) != 0  # rows a carried connection's pseudo-event opened
        from_b = ((bits & (SEEN_B | CARRIED)) == SEEN_B).view(np.uint8)
        packets_b = np.add.reduceat(from_b, rs, dtype=np.int64)
        packets = np.diff(np.append(rs, n)) - carried
        bytes_b = np.add.reduceat(length * from_b, rs)
        total = np.add.reduceat(length, rs)
        a_first = np.column_stack([packets - packets_b, total - bytes_b, packets_b, bytes_b])
        b_first = np.roll(a_first, 2, axis=1)  # when B initiated, its packets go forward
        counters = np.where((conns.init[conn] == 1)[:, None], b_first, a_first)
        at = np.flatnonzero(carried)
        counters[at] += conns.pending[conn[at]]
        return Rows.with_quiet_intervals(conn, iv[rs], counters)

    def _emit(self, conns: Conns, rows: Rows, final: np.ndarray) -> pa.Table:
        """The final rows as a table; the last row of each open connection stays pending."""
        last = np.append(rows.conn[1:] != rows.conn[:-1], True)
        rows.started, rows.completed = self._flags(conns, rows, last & final[rows.conn])
        keep = last & ~final[rows.conn]
        self.open = conns.subset(rows.conn[keep])
        self.open.pending = rows.counters[keep]
        return segment_table(conns, rows.subset(~keep), self.interval_us, self.known)

    def _expire(self, final: bool) -> pa.Table:
        """Emit the pending row of each open connection that timed out (all if ``final``)."""
        o = self.open
        expired = self.watermark - o.last_ts > timeout_for(o.keys["pv"], o.bits, self.timeouts)
        done = np.flatnonzero(expired | final)
        rows = Rows(conn=done, iv=o.last_ts[done] // self.interval_us,
                    counters=o.pending[done])
        ended = np.zeros(len(o), dtype=bool)
        ended[expired] = True  # at the end of the capture, only what timed out has ended
        rows.started, rows.completed = self._flags(o, rows, ended[done] | self._tcp(o)[done])
        self.open = o.subset(np.flatnonzero(~(expired | final)))
        return segment_table(o, rows, self.interval_us, self.known)

    def _flags(self, conns: Conns, rows: Rows, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``started`` and ``completed`` per row; ``ends`` marks rows where the connection
        ended (TCP rows also need FIN both ways or RST)."""
        tcp = self._tcp(conns)
        b = conns.bits
        closed = (((b & FIN_A) != 0) & ((b & FIN_B) != 0)) | ((b & RST) != 0)
        first_iv = conns.first_ts // self.interval_us
        started = (rows.iv == first_iv[rows.conn]) & (~tcp | conns.syn_first)[rows.conn]
        completed = ends & np.where(tcp, closed, True)[rows.conn]
        return started, completed

    @staticmethod
    def _tcp(conns: Conns) -> np.ndarray:
        tcp: np.ndarray = (conns.keys["pv"] & 255) == 6
        return tcp
