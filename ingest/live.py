"""Live traffic sources for the agent: conntrack over ctnetlink, and sniffed frames.

:class:`ConntrackSource` is the main path, the one that keeps up with a busy node. The kernel
aggregates each connection; the source follows NEW and DESTROY events as they come and dumps
the table at the end of every interval, so that

* a connection that lived and died inside one interval is reported once, with the final
  counters of its DESTROY event;
* a long-lived connection is reported in every interval it was active, with the increase of
  its counters since the previous interval (as Felix's collector counts);
* ``started`` marks a connection's first interval (a NEW event, or a kernel start time since
  the first interval began), ``completed`` its last (DESTROY, or TCP TIME_WAIT/CLOSE, which
  Felix expires early), as ``ingest.conntrack`` does for snapshots;
* the dump runs a little after the interval's end, while connections keep coming: one that
  began after the end (by its kernel start time) is left for the next interval, and the
  events are read again after the dump, so that an entry deleted meanwhile is known by its
  DESTROY event rather than taken for vanished.

Entries of the dump that did not change since the previous one (``ctnetlink.Table``: mostly
TIME_WAIT entries already reported) are passed over without any work but a lookup.

Memory is bounded: at most ``max_connections`` are followed; past that the least recently
active are dropped, counted in :attr:`ConntrackSource.evicted` (a dropped connection seen
again is followed afresh, so its earlier counters, and its start, count twice: the count
says how often).

:class:`FrameSniffer` reads frames from AF_PACKET sockets (scapy's ``L2ListenSocket``, with a
BPF filter) on a thread; its frames go through the same columnar decoder as pcap files. It
serves DNS answers (for ``dest_domains``) and :class:`PacketSource`, the path for nodes
without conntrack. The kernel's drop counter of every socket is read (``PACKET_STATISTICS``)
and reported.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest import ctnetlink
from ingest.connections import ConnectionTracker, Timeouts
from ingest.dns import Answers, DnsError, dns_table
from ingest.frames import PAD, Frames
from ingest.packets import decode
from ingest.schema import DNS, SEGMENTS, Reject

__all__ = ["ConntrackSource", "DnsCache", "FrameSniffer", "PacketSource"]

_SOL_PACKET, _PACKET_STATISTICS = 263, 6
_SO_RCVBUFFORCE = 33
_LINKTYPE_ETHERNET = 1
_LINKTYPE_RAW = 101  # an IP packet, no link header (what a cooked packet socket reads)
_DLT_RAW = 12  # libpcap's name for it when compiling a filter
_ETH_P_ALL = 0x0003
_DUP_WINDOW = 1_000_000  # µs: the same bytes again within it are another port's copy
_RECENT_MAX = 200_000


@dataclass(slots=True)
class _Conn:
    conn_id: int
    entry: ctnetlink.Entry
    start_us: int
    seen_new: bool  # a NEW event (the connection began while we watched)
    base: tuple[int, int, int, int]  # counters already reported
    reported: bool = False
    done: bool = False
    dumped: int = 0  # the last dump that had it


def _counters(e: ctnetlink.Entry) -> tuple[int, int, int, int]:
    return (e.packets_orig or 0, e.bytes_orig or 0, e.packets_reply or 0, e.bytes_reply or 0)


class ConntrackSource:
    """Per-interval connection segments from the conntrack table of ``netns``."""

    def __init__(self, netns: str | None = None, max_connections: int = 1_000_000,
                 dump: Any = None, events: Any = None) -> None:
        self.netns = netns
        self.events = events if events is not None else ctnetlink.Events(netns)
        self.max_connections = max_connections
        self._dump = dump if dump is not None else ctnetlink.Table().dump
        self.conns: OrderedDict[tuple[object, ...], _Conn] = OrderedDict()
        self.closed: list[tuple[_Conn, ctnetlink.Entry]] = []
        self.next_id = 1
        self.first_us: int | None = None  # the start of the first interval collected
        self.dumps = 0
        self.evicted = 0
        self.vanished = 0  # followed connections gone without a DESTROY event
        self.events_seen = 0

    @property
    def lost(self) -> int:
        """Times the kernel dropped events because we read too slowly (ENOBUFS)."""
        return self.events.lost

    def fileno(self) -> int:
        return self.events.fileno()

    def poll(self) -> int:
        """Take in the events waiting now; returns how many."""
        events = self.events.read()
        for e in events:
            if e.kind == "new":
                self._follow(e, seen_new=True, now_us=time.time_ns() // 1000)
            elif e.kind == "destroy":
                # Unknown: its NEW event was lost, or it began before we watched; its
                # kernel start time tells which.
                conn = self.conns.pop(e.key, None) or self._new_conn(
                    e, seen_new=False, now_us=time.time_ns() // 1000)
                self.closed.append((conn, e))
        self.events_seen += len(events)
        return len(events)

    def _new_conn(self, e: ctnetlink.Entry, seen_new: bool, now_us: int) -> _Conn:
        start = e.start_ns // 1000 if e.start_ns else now_us
        conn = _Conn(self.next_id, e, start, seen_new, (0, 0, 0, 0))
        self.next_id += 1
        return conn

    def _follow(self, e: ctnetlink.Entry, seen_new: bool, now_us: int) -> _Conn:
        conn = self.conns.get(e.key)
        if conn is None:
            conn = self.conns[e.key] = self._new_conn(e, seen_new, now_us)
            while len(self.conns) > self.max_connections:
                self.conns.popitem(last=False)
                self.evicted += 1
        else:
            self.conns.move_to_end(e.key)
            conn.entry = e
        return conn

    def collect(self, start_us: int, end_us: int) -> pa.Table:
        """The SEGMENTS rows of the interval [start_us, end_us): a dump now, plus what
        ended since the last call."""
        if self.first_us is None:
            self.first_us = start_us
        self.poll()
        followed = self.next_id  # connections followed from here on cannot have vanished
        self.dumps += 1
        rows: list[dict[str, Any]] = []
        for e in self._dump(self.netns):
            conn = self.conns.get(e.key)
            if conn is None or conn.entry is not e or not conn.reported:
                conn = self._follow(e, seen_new=False, now_us=end_us)
                closing = e.tcp_state in ctnetlink.CLOSING_TCP_STATES
                self._row(rows, conn, e, start_us, end_us, completed=closing)
            # else: the very entry of the last dump, reported then: nothing new
            conn.dumped = self.dumps
        self.poll()  # the DESTROY events of entries deleted while the table was dumped
        closed, self.closed = self.closed, []
        for conn, e in closed:
            if not self._row(rows, conn, e, start_us, end_us, completed=True):
                self.closed.append((conn, e))
        for key in [k for k, c in self.conns.items()
                    if c.dumped != self.dumps and c.conn_id < followed]:
            conn = self.conns.pop(key)  # gone, and its DESTROY event was lost
            self.vanished += 1
            self._row(rows, conn, conn.entry, start_us, end_us, completed=True,
                      final=False)
        return pa.Table.from_pylist(rows, schema=SEGMENTS)

    def _row(self, rows: list[dict[str, Any]], conn: _Conn, e: ctnetlink.Entry,
             start_us: int, end_us: int, *, completed: bool, final: bool = True) -> bool:
        """Add the connection's row if it has news; False (nothing added) when it began
        after ``end_us``, so belongs to a later interval."""
        if final and not conn.reported and e.start_ns and e.start_ns // 1000 >= end_us:
            return False
        now = _counters(e) if final else conn.base
        delta = [max(0, a - b) for a, b in zip(now, conn.base, strict=True)]
        first = self.first_us if self.first_us is not None else start_us
        started = not conn.reported and (conn.seen_new or first <= conn.start_us < end_us)
        ending = completed and not conn.done
        if not any(delta) and not started and not ending:
            return True
        dnat = (e.orig_dst, e.orig_dport) != (e.reply_src, e.reply_sport)
        rows.append({
            "start_time": start_us // 1_000_000, "end_time": -(-end_us // 1_000_000),
            "conn_id": conn.conn_id,
            "conn_start": conn.start_us, "proto": e.proto, "src_ip": e.orig_src,
            "dst_ip": e.reply_src, "src_port": e.orig_sport, "dst_port": e.reply_sport,
            "orig_dst_ip": e.orig_dst if dnat else None,
            "orig_dst_port": e.orig_dport if dnat else None,
            "icmp_type": e.icmp_type, "icmp_code": e.icmp_code,
            "packets_fwd": delta[0], "bytes_fwd": delta[1], "packets_rev": delta[2],
            "bytes_rev": delta[3], "started": started, "completed": ending})
        conn.base, conn.reported, conn.done = now, True, conn.done or completed
        return True

    def close(self) -> None:
        self.events.close()


class FrameSniffer:
    """Frames from AF_PACKET sockets on ``ifaces`` (in ``netns``), read on a thread."""

    def __init__(self, ifaces: list[str], bpf: str | None, netns: str | None = None,
                 max_frames: int = 2_000_000) -> None:
        # scapy takes a second to import: only an agent that sniffs pays for it.
        try:
            from scapy.arch.linux import L2ListenSocket  # noqa: PLC0415
        except ImportError as e:
            raise ValueError("sniffing (--iface) needs scapy: pip install 'tierflow[capture]'"
                             ) from e

        self.sockets: list[tuple[socket.socket, int, Any]] = []  # (raw socket, link, owner)
        with ctnetlink.in_netns(netns):
            for iface in ifaces:
                if iface == "any":
                    raw = _any_interface(bpf)
                    self.sockets.append((raw, _LINKTYPE_RAW, raw))
                else:
                    try:
                        owner = L2ListenSocket(iface=iface, filter=bpf, promisc=True)
                    except (OSError, ValueError, RuntimeError) as e:  # scapy's exceptions
                        raise ValueError(f"--iface {iface}: cannot sniff on it ({e}); give "
                                         "an interface of the node (ip link) or 'any'"
                                         ) from e
                    _big_buffer(owner.ins)  # scapy's is 64 KiB: a burst of DNS fills it
                    self.sockets.append((owner.ins, _LINKTYPE_ETHERNET, owner))
        self.max_frames = max_frames
        self._lock = threading.Lock()
        self._frames: list[tuple[int, int, bytes]] = []
        self.overflow = 0  # frames dropped because the agent fell behind (max_frames)
        self.copies = 0  # copies of one packet read on several interfaces (``any``), skipped
        self._recent: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tierflow-sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raw = {s.fileno(): (s, link) for s, link, _ in self.sockets}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(raw), [], [], 0.2)
            got = []
            for fd in ready:
                sock, link = raw[fd]
                while True:
                    try:
                        data = sock.recv(65535, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        if self._stop.is_set():
                            return
                        break
                    now = time.time_ns() // 1000
                    if link == _LINKTYPE_RAW and self._copy(data, now):
                        continue
                    got.append((now, link, data))
            if got:
                with self._lock:
                    room = self.max_frames - len(self._frames)
                    self._frames += got[:max(room, 0)]
                    self.overflow += max(0, len(got) - max(room, 0))

    def _copy(self, data: bytes, now: int) -> bool:
        """Whether this packet is a copy of one read in the last second: on ``any``, a
        bridged packet is read once per port it crosses (the pod's veth, the bridge, the
        other veth), unchanged. A routed copy differs (its TTL went down) and is kept."""
        key = hash(data)
        seen = self._recent.get(key)
        self._recent[key] = now
        if len(self._recent) > _RECENT_MAX:
            self._recent = {k: t for k, t in self._recent.items() if now - t < _DUP_WINDOW}
        if seen is not None and now - seen < _DUP_WINDOW:
            self.copies += 1
            return True
        return False

    def drain(self) -> Frames:
        """The frames read since the last call, as one ``Frames`` batch."""
        with self._lock:
            got, self._frames = self._frames, []
        n = len(got)
        sizes = np.fromiter((len(d) for _, _, d in got), dtype=np.int64, count=n)
        data = np.zeros(n, dtype=np.int64)
        if n:
            data[1:] = np.cumsum(sizes)[:-1]
        buf = np.frombuffer(b"".join(d for _, _, d in got) + bytes(PAD), dtype=np.uint8)
        return Frames(buf=buf, data=data, caplen=sizes,
                      ts_us=np.fromiter((t for t, _, _ in got), dtype=np.int64, count=n),
                      link=np.fromiter((k for _, k, _ in got), dtype=np.int32, count=n),
                      number=np.arange(1, n + 1, dtype=np.int64), where=data.copy(),
                      rejects=[], records=n)

    def drops(self) -> int:
        """Frames the kernel dropped since the last call (``PACKET_STATISTICS`` resets on
        read), over every socket."""
        total = 0
        for sock, _, _ in self.sockets:
            try:
                raw = sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
            except OSError:
                continue
            total += struct.unpack("=II", raw)[1]
        return total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for _, _, owner in self.sockets:
            owner.close()


def _big_buffer(sock: socket.socket, size: int = 16 << 20) -> None:
    """A receive buffer that holds a second of a busy node's DNS answers while the agent
    flushes (``net.core.rmem_max`` caps SO_RCVBUF; root may force past it)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)


def _any_interface(bpf: str | None) -> socket.socket:
    """A packet socket on every interface, reading IP packets without link headers (so
    Ethernet, tunnels and WireGuard alike), filtered in the kernel by ``bpf``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL))
    _big_buffer(sock)
    if bpf:
        from scapy.arch.common import compile_filter, free_filter  # noqa: PLC0415
        from scapy.arch.linux import SO_ATTACH_FILTER  # noqa: PLC0415
        from scapy.libs.structures import sock_fprog  # noqa: PLC0415

        program = compile_filter(bpf, linktype=_DLT_RAW)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        sock_fprog(program.bf_len, program.bf_insns))  # type: ignore[arg-type]
        free_filter(program)
    return sock


class DnsCache:
    """DNS answers still within their TTL, bounded to ``limit`` rows (oldest go first)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.table = DNS.empty_table()
        self.answers = 0
        self.parsed: dict[bytes, Answers | DnsError] = {}
        self.rejects: list[Reject] = []

    def add_frames(self, frames: Frames, name: str) -> None:
        if not len(frames):
            return
        packets = decode(frames, name)
        rows, rejects = dns_table(packets, name, None, self.parsed)
        self.rejects += rejects
        self.add(rows)
        if len(self.parsed) > 100_000:
            self.parsed.clear()

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self.answers += rows.num_rows
            self.table = pa.concat_tables([self.table, rows.cast(DNS)])
            if self.table.num_rows > self.limit:
                self.table = self.table.slice(self.table.num_rows - self.limit)

    def current(self, since_us: int) -> pa.Table:
        """Answers whose TTL reaches ``since_us`` (older ones are dropped)."""
        t = self.table
        if not t.num_rows:
            return t
        ends = t["time"].cast(pa.int64()).to_numpy() + t["ttl"].to_numpy() * 1_000_000
        self.table = t.filter(pa.array(ends >= since_us))
        return self.table


class PacketSource:
    """Connection segments rebuilt from sniffed frames, for nodes without conntrack (the
    pcap reader's columnar path, fed live)."""

    def __init__(self, sniffer: FrameSniffer, interval: int, dns: DnsCache) -> None:
        self.sniffer = sniffer
        self.tracker = ConnectionTracker(interval, Timeouts())
        self.dns = dns
        self.pending: list[pa.Table] = []
        self.rejects: list[Reject] = []
        self.packets = 0

    def poll(self) -> int:
        frames = self.sniffer.drain()
        if not len(frames):
            return 0
        packets = decode(frames, "live")
        self.packets += len(frames)
        self.rejects += packets.rejects
        self.pending.append(self.tracker.feed(packets))
        rows, rejects = dns_table(packets, "live", self.tracker.known, self.dns.parsed)
        self.dns.add(rows)
        self.rejects += rejects
        return len(frames)

    def collect(self, start_us: int, end_us: int, final: bool = False) -> pa.Table:
        """Rows that became final so far (a connection's row is final once it moved on to a
        later interval, ended or idled out); ``final`` takes every open one too."""
        self.poll()
        if final:
            self.pending.append(self.tracker.finish())
        out = pa.concat_tables([SEGMENTS.empty_table(), *self.pending])
        self.pending = []
        return out
