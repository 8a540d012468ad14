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

Columnar: a chunk's packets are sorted once by flow (stable, so time order stays), the
connection boundaries found with vectorised tests, and only the few candidates that depend
on state (long gaps, SYN after FIN/RST) are decided in Python. Connections still open at a
chunk's end are carried as one pseudo-event each into the next chunk, so memory is bounded
by the number of open connections.
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
_KEYS = ("pv", "a_hi", "a_lo", "b_hi", "b_lo", "pa", "pb")
_K = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                             0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)]


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


def timeout_for(pv: np.ndarray, bits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The idle timeout (µs) of connections with protocol ``pv`` and state ``bits``."""
    proto = pv & 255
    closing = (bits & (FIN_A | FIN_B | RST)) != 0
    answered = (bits & (SEEN_A | SEEN_B)) == (SEEN_A | SEEN_B)
    icmp = ((proto == 1) & (pv < 256)) | ((proto == 58) & (pv > 255))
    return np.select([(proto == 6) & closing, proto == 6, (proto == 17) & answered,
                      proto == 17, icmp], [table[1], table[0], table[3], table[2], table[4]],
                     table[5])


def flow_columns(p: Packets) -> dict[str, np.ndarray]:
    """Canonical flow keys (endpoint A is the smaller (address, port)) and event bits."""
    v6 = bool((p.pv > 255).any())
    lower = (p.src_lo < p.dst_lo) | ((p.src_lo == p.dst_lo) & (p.sport <= p.dport))
    if v6:
        lower = (p.src_hi < p.dst_hi) | ((p.src_hi == p.dst_hi) & lower)
    swap = ~lower
    flags = p.flags
    synbits = flags & 0x12  # SYN and ACK
    bits = (np.where(swap, SEEN_B, SEEN_A)
            | np.where((flags & 1) != 0, np.where(swap, FIN_B, FIN_A), 0)
            | np.where((flags & 4) != 0, RST, 0)
            | np.where(synbits == 0x02, SYN, 0) | np.where(synbits == 0x12, SYNACK, 0))
    return {"pv": p.pv, "a_hi": np.where(swap, p.dst_hi, p.src_hi),
            "a_lo": np.where(swap, p.dst_lo, p.src_lo),
            "b_hi": np.where(swap, p.src_hi, p.dst_hi),
            "b_lo": np.where(swap, p.src_lo, p.dst_lo),
            "pa": np.where(swap, p.dport, p.sport), "pb": np.where(swap, p.sport, p.dport),
            "bits": bits.astype(np.uint8)}


def flow_hash(keys: dict[str, np.ndarray]) -> np.ndarray:
    """A 64-bit hash of the flow key (collisions are detected by ``flow_order``)."""
    ports = (keys["pa"].astype(np.uint64) << np.uint64(32)) ^ keys["pb"].astype(np.uint64)
    h = (keys["a_lo"] * _K[0]) ^ (keys["b_lo"] * _K[1]) ^ (ports * _K[2])
    h ^= keys["pv"].astype(np.uint64) * _K[3]
    if (keys["pv"] > 255).any():
        h ^= (keys["a_hi"] * _K[4]) ^ (keys["b_hi"] * _K[5])
    h ^= h >> np.uint64(31)
    h *= _K[4]
    mixed: np.ndarray = h ^ (h >> np.uint64(29))
    return mixed


def flow_order(keys: dict[str, np.ndarray], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that groups events by flow, and where each flow starts in it.

    Sorting one uint64 hash is fast; equal hashes with different keys (astronomically
    rare) are detected exactly, and then the full keys are sorted instead.
    """
    n = len(h)
    order = pl.DataFrame({"h": h}).with_row_index("i").sort("h", maintain_order=True)[
        "i"].to_numpy().astype(np.int64)
    sorted_h = h[order]
    same = sorted_h[1:] == sorted_h[:-1]
    varying = _KEYS if (keys["pv"] > 255).any() else ("pv", "a_lo", "b_lo", "pa", "pb")
    for name in varying:
        k = keys[name][order]
        if (same & (k[1:] != k[:-1])).any():
            order = np.lexsort([np.arange(n)] + [keys[k] for k in reversed(_KEYS)])
            differs = np.zeros(n - 1, dtype=bool)
            for key in _KEYS:
                k = keys[key][order]
                differs |= k[1:] != k[:-1]
            same = ~differs
            break
    return order, np.concatenate([[True], ~same]) if n else np.zeros(0, dtype=bool)



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


class ConnectionTracker:
    """Feed it the ``Packets`` of each chunk in file order; it returns the ``SEGMENTS``
    rows that became final, and ``finish()`` returns the rest."""

    def __init__(self, interval: int, timeouts: Timeouts) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds (got {interval!r})")
        self.interval_us = int(interval) * 1_000_000
        self.timeouts = timeouts.microseconds()
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
        ev = self._events(p, ts)
        order, newflow = flow_order(ev, flow_hash(ev))
        ts, bits = ev["ts"][order], ev["bits"][order]
        boundary = self._boundaries(ev["pv"][order[newflow]], newflow, ts, bits)
        start = np.flatnonzero(boundary)
        conns = self._conns(ev, p, order, start, ts, bits)
        is_last = np.append(newflow, True)[np.append(start[1:], len(ts))]
        expired = self.watermark - conns.last_ts > timeout_for(conns.keys["pv"], conns.bits,
                                                               self.timeouts)
        rows = self._rows(conns, start, boundary, ts, bits, ev["len"][order])
        return self._emit(conns, rows, final=~is_last | expired)

    def finish(self) -> pa.Table:
        """The rows of every connection still open, at the end of the capture."""
        return self._expire(final=True)

    def _events(self, p: Packets, ts: np.ndarray) -> dict[str, np.ndarray]:
        """Event columns: one pseudo-event per carried connection first, then the packets."""
        cols = flow_columns(p)
        cols["ts"], cols["len"] = ts, p.ip_len
        o = self.open
        if not len(o):
            return cols
        carried = {**o.keys, "bits": o.bits | CARRIED, "ts": o.last_ts,
                   "len": np.zeros(len(o), dtype=np.int64)}
        return {k: np.concatenate([carried[k], v]) for k, v in cols.items()}

    def _boundaries(self, flow_pv: np.ndarray, newflow: np.ndarray, ts: np.ndarray,
                    bits: np.ndarray) -> np.ndarray:
        """Where connections start in the flow-sorted events."""
        n = len(ts)
        fstart = np.flatnonzero(newflow)
        lengths = np.diff(np.append(fstart, n))
        shortest = np.minimum(timeout_for(flow_pv, np.zeros(len(fstart), np.uint8), self.timeouts),
                              timeout_for(flow_pv, np.full(len(fstart), _STATE_BITS),
                                          self.timeouts))
        gap = np.diff(ts, prepend=ts[0])
        candidate = ~newflow & (gap > np.repeat(shortest, lengths))
        syn = (bits & SYN) != 0
        closing = (bits & (FIN_A | FIN_B | RST)) != 0
        if syn.any() and closing.any():  # a SYN after this flow saw a FIN or RST
            last_close = np.maximum.accumulate(np.where(closing, np.arange(n), -1))
            before = np.concatenate([[-1], last_close[:-1]])
            candidate |= syn & ~newflow & (before >= np.repeat(fstart, lengths))
        if not candidate.any():
            return newflow
        boundary = newflow.copy()
        flow = np.cumsum(newflow) - 1
        for i in self._decide(np.flatnonzero(candidate), flow, fstart, flow_pv, gap, bits):
            boundary[i] = True
        return boundary

    def _decide(self, candidates: np.ndarray, flow: np.ndarray, fstart: np.ndarray,
                flow_pv: np.ndarray, gap: np.ndarray, bits: np.ndarray) -> list[int]:
        """The candidates that do start a connection, given the state of the connection
        before each (which depends on where the previous accepted boundary was)."""
        counts = {bit: np.cumsum((bits & bit) != 0) for bit in
                  (int(SEEN_A), int(SEEN_B), int(FIN_A), int(FIN_B), int(RST))}
        table = self.timeouts.tolist()
        starts: dict[int, int] = {}
        accepted: list[int] = []
        for i in candidates.tolist():
            f = int(flow[i])
            s = starts.get(f, int(fstart[f]))
            state = 0
            for bit, count in counts.items():
                if count[i - 1] - (count[s - 1] if s else 0):
                    state |= bit
            closed = (state & FIN_A and state & FIN_B) or state & RST
            if gap[i] > _scalar_timeout(int(flow_pv[f]), state, table) or (
                    bits[i] & SYN and closed):
                accepted.append(i)
                starts[f] = i
        return accepted

    def _conns(self, ev: dict[str, np.ndarray], p: Packets, order: np.ndarray,
               start: np.ndarray, ts: np.ndarray, bits: np.ndarray) -> Conns:
        """Connection-level columns; carried connections keep their id and initiator."""
        o = self.open
        first = order[start]  # event index of each connection's first event
        old = first < len(o)
        at = first[old]
        fb = bits[start]
        new = ~old
        conns = Conns(
            keys={k: ev[k][first] for k in Conns.KEYS},
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
        fresh = np.flatnonzero(new)[np.argsort(first[new], kind="stable")]  # packet order
        conns.conn_id[fresh] = self.next_id + np.arange(len(fresh))
        self.next_id += len(fresh)
        conns.pending = np.zeros((len(start), 4), dtype=np.int64)
        conns.pending[old] = o.pending[at]  # added to the row their pseudo-event opens
        return conns

    def _rows(self, conns: Conns, start: np.ndarray, boundary: np.ndarray, ts: np.ndarray,
              bits: np.ndarray, length: np.ndarray) -> Rows:
        """One row per connection and interval, quiet intervals included; counters are
        oriented by the initiator. ``started``/``completed`` are set by the caller."""
        n = len(ts)
        iv = ts // self.interval_us
        opens = boundary.copy()
        opens[1:] |= iv[1:] != iv[:-1]
        rs = np.flatnonzero(opens)
        conn = (np.cumsum(boundary) - 1)[rs]
        by_b = np.repeat(conns.init == 1, np.diff(np.append(start, n)))
        pkt = (bits & CARRIED) == 0
        fwd = pkt & (((bits & SEEN_B) != 0) == by_b)
        pf = np.add.reduceat(fwd.astype(np.int64), rs)
        bf = np.add.reduceat(np.where(fwd, length, 0), rs)
        counters = np.column_stack([pf, bf, np.add.reduceat(pkt.astype(np.int64), rs) - pf,
                                    np.add.reduceat(length, rs) - bf])
        carried = np.flatnonzero(~pkt[rs])  # rows a carried connection's pseudo-event opened
        counters[carried] += conns.pending[conn[carried]]
        return _with_quiet_intervals(conn, iv[rs], counters)

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


def _with_quiet_intervals(conn: np.ndarray, iv: np.ndarray, counters: np.ndarray) -> Rows:
    """Insert zero-counter rows for the intervals a connection was silent in."""
    gap = np.zeros(len(conn), dtype=np.int64)
    gap[:-1] = np.where(conn[1:] == conn[:-1], iv[1:] - iv[:-1] - 1, 0)
    if not gap.any():
        return Rows(conn=conn, iv=iv, counters=counters)
    reps = gap + 1
    step = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    filled = np.zeros((len(step), 4), dtype=np.int64)
    filled[step == 0] = counters
    return Rows(conn=np.repeat(conn, reps), iv=np.repeat(iv, reps) + step, counters=filled)
