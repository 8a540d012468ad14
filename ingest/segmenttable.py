"""Connection and row columns of the connection tracker, and their ``SEGMENTS`` table.

``Conns`` holds one row per connection (flow key with endpoint A the smaller, initiator,
times, state bits); ``Rows`` one per connection and interval. ``segment_table`` orients
each row by its initiator (``src_*`` = the initiator) and formats addresses once per
distinct address, never per row.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.schema import SEGMENTS, conform

__all__ = ["Conns", "Rows", "ip_strings", "segment_table"]

_PORTED = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite


@dataclass
class Conns:
    """One row per connection."""

    KEYS: ClassVar[tuple[str, ...]] = ("pv", "a_hi", "a_lo", "b_hi", "b_lo", "pa", "pb")
    keys: dict[str, np.ndarray]  # pv = protocol | 256 for IPv6; endpoint A < endpoint B
    bits: np.ndarray  # uint8: SEEN/FIN per side and RST, over the whole connection
    conn_id: np.ndarray  # int64
    init: np.ndarray  # int8: 0 when endpoint A initiated, 1 when B did
    first_ts: np.ndarray  # int64 µs
    last_ts: np.ndarray  # int64 µs
    syn_first: np.ndarray  # bool: the first packet was a SYN or SYN+ACK
    icmp: np.ndarray  # int16 (n, 2): type and code of the first packet, -1 if not ICMP
    pending: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.conn_id)

    @classmethod
    def empty(cls) -> Conns:
        return cls(keys={"pv": np.zeros(0, np.int32), "a_hi": np.zeros(0, np.uint64),
                         "a_lo": np.zeros(0, np.uint64), "b_hi": np.zeros(0, np.uint64),
                         "b_lo": np.zeros(0, np.uint64), "pa": np.zeros(0, np.int32),
                         "pb": np.zeros(0, np.int32)},
                   bits=np.zeros(0, np.uint8), conn_id=np.zeros(0, np.int64),
                   init=np.zeros(0, np.int8), first_ts=np.zeros(0, np.int64),
                   last_ts=np.zeros(0, np.int64), syn_first=np.zeros(0, bool),
                   icmp=np.zeros((0, 2), np.int16))

    def subset(self, idx: np.ndarray) -> Conns:
        return Conns(keys={k: v[idx] for k, v in self.keys.items()}, bits=self.bits[idx],
                     conn_id=self.conn_id[idx], init=self.init[idx],
                     first_ts=self.first_ts[idx], last_ts=self.last_ts[idx],
                     syn_first=self.syn_first[idx], icmp=self.icmp[idx],
                     pending=self.pending[idx] if len(self.pending) else self.pending)


@dataclass
class Rows:
    """One row per connection and interval: ``conn`` indexes ``Conns``; ``iv`` is the
    interval number (start time // interval); counters are packets/bytes fwd, rev."""

    conn: np.ndarray
    iv: np.ndarray
    counters: np.ndarray  # int64 (n, 4)
    started: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    completed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def subset(self, keep: np.ndarray) -> Rows:
        return Rows(self.conn[keep], self.iv[keep], self.counters[keep], self.started[keep],
                    self.completed[keep])

    @classmethod
    def with_quiet_intervals(cls, conn: np.ndarray, iv: np.ndarray, counters: np.ndarray,
                             ) -> Rows:
        """Rows for ``conn``/``iv``/``counters``, with zero-counter rows inserted for the
        intervals a connection was silent in."""
        gap = np.zeros(len(conn), dtype=np.int64)
        gap[:-1] = np.where(conn[1:] == conn[:-1], iv[1:] - iv[:-1] - 1, 0)
        if not gap.any():
            return cls(conn=conn, iv=iv, counters=counters)
        reps = gap + 1
        step = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
        filled = np.zeros((len(step), 4), dtype=np.int64)
        filled[step == 0] = counters
        return cls(conn=np.repeat(conn, reps), iv=np.repeat(iv, reps) + step, counters=filled)


def segment_table(conns: Conns, rows: Rows, interval_us: int,
                  known: dict[int, str] | None = None) -> pa.Table:
    """The ``SEGMENTS`` table of ``rows``, sorted by interval, then connection id;
    ``known`` is ``ip_strings``'s cache of address texts."""
    rows = rows.subset(_row_order(conns.conn_id[rows.conn], rows.iv))
    c = rows.conn
    by_b = conns.init[c] == 1
    k = {name: v[c] for name, v in conns.keys.items()}
    v6 = k["pv"] > 255
    proto = (k["pv"] & 255).astype(np.uint8)
    ported = np.isin(proto, _PORTED) & (k["pa"] >= 0)
    icmp = conns.icmp[c]
    start = rows.iv * (interval_us // 1_000_000)
    # one ip_strings call for both ends: src (the initiator) then dst
    ips = ip_strings(np.concatenate([np.where(by_b, k["b_hi"], k["a_hi"]),
                                     np.where(by_b, k["a_hi"], k["b_hi"])]),
                     np.concatenate([np.where(by_b, k["b_lo"], k["a_lo"]),
                                     np.where(by_b, k["a_lo"], k["b_lo"])]),
                     np.concatenate([v6, v6]), known)
    cols = {
        "start_time": pa.array(start, pa.timestamp("s", tz="UTC")),
        "end_time": pa.array(start + interval_us // 1_000_000, pa.timestamp("s", tz="UTC")),
        "conn_id": conns.conn_id[c],
        "conn_start": pa.array(conns.first_ts[c], pa.timestamp("us", tz="UTC")),
        "proto": proto,
        "src_ip": ips.slice(0, len(c)), "dst_ip": ips.slice(len(c)),
        "src_port": pa.array(np.where(by_b, k["pb"], k["pa"]), pa.int32(), mask=~ported),
        "dst_port": pa.array(np.where(by_b, k["pa"], k["pb"]), pa.int32(), mask=~ported),
        "icmp_type": pa.array(icmp[:, 0], pa.int16(), mask=icmp[:, 0] < 0),
        "icmp_code": pa.array(icmp[:, 1], pa.int16(), mask=icmp[:, 1] < 0),
        "packets_fwd": rows.counters[:, 0], "bytes_fwd": rows.counters[:, 1],
        "packets_rev": rows.counters[:, 2], "bytes_rev": rows.counters[:, 3],
        "started": rows.started, "completed": rows.completed,
    }
    return conform(pa.table(cols), SEGMENTS)


def _row_order(conn_id: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """The order of rows by interval, then connection id: one sort of both packed into
    an int64 when they fit (the pairs are unique, so any sort gives the same order)."""
    if len(iv) and conn_id.min() >= 0 and conn_id.max() < 1 << 40:
        low = iv.min()
        if iv.max() - low < 1 << 23:
            order: np.ndarray = np.argsort(((iv - low) << 40) | conn_id)
            return order
    return np.lexsort((conn_id, iv))


def ip_strings(hi: np.ndarray, lo: np.ndarray, v6: np.ndarray,
               known: dict[int, str] | None = None) -> pa.Array:
    """Addresses as text (``10.0.0.1``, ``2001:db8::1``), formatted once per distinct one;
    ``known`` remembers IPv4 texts across calls (one read sees the same hosts again).

    The distinct addresses are found by Arrow's hash-based ``dictionary_encode``; their
    texts become one array that ``take`` spreads over the rows, so no Python object is
    made per row."""
    known = {} if known is None else known
    if len(known) > 1 << 20:  # bounded: a scan of the whole internet does not grow it
        known.clear()
    four = ~v6
    everyone = bool(four.all())
    encoded = pc.dictionary_encode(pa.array(lo if everyone else lo[four]))
    names = [known.get(x) or known.setdefault(x, socket.inet_ntoa(x.to_bytes(4, "big")))
             for x in encoded.dictionary.to_pylist()]
    if everyone:
        return pa.array(names, pa.string()).take(encoded.indices)
    index = np.zeros(len(lo), dtype=np.int64)
    index[four] = encoded.indices.to_numpy()
    key = np.zeros(int(v6.sum()), dtype=[("hi", "<u8"), ("lo", "<u8")])
    key["hi"], key["lo"] = hi[v6], lo[v6]
    uniq6, inverse6 = np.unique(key, return_inverse=True)
    index[v6] = len(names) + inverse6.reshape(-1)
    names += [_ip6_text(h, low) for h, low in uniq6.tolist()]
    return pa.array(names, pa.string()).take(index)


def _ip6_text(hi: int, lo: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, hi.to_bytes(8, "big") + lo.to_bytes(8, "big"))
