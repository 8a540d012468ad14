"""The node agent: live flows, aggregated per interval, annotated and flushed to the store.

Like Felix's collector, one agent runs per node. Every ``interval`` seconds (aligned to the
epoch, as flow logs are) it turns what its source saw — conntrack (:class:`ConntrackSource`)
or sniffed packets (:class:`PacketSource`) — into SEGMENTS, lets the flow builder type the
endpoints, map DNS names, evaluate the policies and aggregate per replica-set prefix, and
commits the records to the store in one transaction. So a crash loses at most the interval
in progress, and SIGTERM or SIGINT flushes it before exiting.

The flow builder (inventory and policies) is made by ``make_builder`` and made again when
one of the ``watched`` files changes: the next flush uses the new one, nothing collected is
lost. Each flush logs one line: records written, connections, events, and every loss — events
the kernel dropped, frames dropped, connections evicted or vanished.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import pyarrow as pa

from ingest.flows import FlowBuilder
from ingest.live import ConntrackSource, DnsCache, FrameSniffer, PacketSource
from ingest.schema import SEGMENTS
from ingest.store import Store

__all__ = ["Agent", "AgentStats"]

log = logging.getLogger("tierflow.agent")

DNS_FILTER = "udp src port 53 or tcp src port 53"
RELOAD_CHECK = 1.0  # seconds between looks at the inventory's and policies' mtimes


@dataclass
class AgentStats:
    """Totals since the agent started (also written to ``_state/agent-<host>.json``)."""

    intervals: int = 0
    records: int = 0
    segments: int = 0
    connections_started: int = 0
    events: int = 0
    events_lost: int = 0  # ENOBUFS from the conntrack event socket
    frames_dropped: int = 0  # kernel drops on the sniffing sockets
    frames_overflow: int = 0  # frames dropped because the agent fell behind
    frame_copies: int = 0  # one packet read again on another interface (--iface any), skipped
    evicted: int = 0
    vanished: int = 0
    dns_answers: int = 0
    rejects: int = 0
    reloads: int = 0
    reload_errors: list[str] = field(default_factory=list)


class Agent:
    """Collect from ``source`` and flush every ``interval`` seconds to ``store``."""

    def __init__(self, store: Store, make_builder: Callable[[], FlowBuilder], *,
                 interval: int = 15, source: str = "conntrack", netns: str | None = None,
                 ifaces: Sequence[str] = (), dns: bool = True,
                 max_connections: int = 1_000_000, watched: Sequence[Path] = (),
                 wait: float | None = 30.0) -> None:
        if interval <= 0:
            raise ValueError(f"--interval must be a positive number of seconds (got {interval})")
        if source not in ("conntrack", "packets"):
            raise ValueError(f"--source must be conntrack or packets (got {source!r})")
        if source == "packets" and not ifaces:
            raise ValueError("--source packets needs --iface (the interfaces to sniff)")
        self.store = store
        self.make_builder = make_builder
        self.builder = make_builder()
        self.interval = interval
        self.wait = wait
        self.stats = AgentStats()
        self.dns = DnsCache()
        self.watched = {p: _mtime(p) for p in watched}
        self.next_reload = time.time() + RELOAD_CHECK
        self.stop = threading.Event()
        self.netns, self.ifaces = netns, list(ifaces)
        sniff_filter = DNS_FILTER if source == "conntrack" else None
        self.sniffer = FrameSniffer(list(ifaces), sniff_filter, netns) \
            if ifaces and (dns or source == "packets") else None
        self.conntrack = ConntrackSource(netns, max_connections) \
            if source == "conntrack" else None
        self.packets = PacketSource(self.sniffer, interval, self.dns) \
            if source == "packets" and self.sniffer else None

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> AgentStats:
        """Until :attr:`stop` is set (or SIGTERM/SIGINT when installed): collect, and flush
        at every interval boundary; the open interval is flushed on the way out."""
        start = self._boundary(time.time())
        what = "conntrack" if self.conntrack else "packets"
        sniffed = f", sniffing {', '.join(self.ifaces)}" if self.sniffer else ""
        log.info("watching %s%s%s; flushing every %d s to %s", what,
                 f" in netns {self.netns}" if self.netns else "", sniffed, self.interval,
                 self.store.root)
        while not self.stop.is_set():
            end = start + self.interval
            self._collect_until(end)
            now = time.time()
            if now >= end:
                self.flush(start, end)
                start = self._boundary(now)
        self.flush(start, time.time(), final=True)
        self.close()
        return self.stats

    def install_signals(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: flushing the open interval", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _boundary(self, t: float) -> int:
        return int(t // self.interval * self.interval)

    def _collect_until(self, end: float) -> None:
        while not self.stop.is_set() and time.time() < end:
            fds = [self.conntrack] if self.conntrack else []
            timeout = max(0.0, min(0.2, end - time.time()))
            if fds:
                select.select(fds, [], [], timeout)
                self.conntrack.poll()  # type: ignore[union-attr]
            else:
                self.stop.wait(timeout)
            self._drain_frames()
            if time.time() >= self.next_reload:
                self._maybe_reload()
                self.next_reload = time.time() + RELOAD_CHECK

    def _drain_frames(self) -> None:
        if self.packets is not None:
            self.packets.poll()
        elif self.sniffer is not None:
            self.dns.add_frames(self.sniffer.drain(), "dns")

    # -- flushing ------------------------------------------------------------------------

    def flush(self, start: float, end: float, final: bool = False) -> int:
        """Build and commit the records of [start, end); returns how many were written."""
        if self.conntrack is not None:
            self.conntrack.poll()  # events queued before the boundary belong to this interval
        self._drain_frames()
        start_us, end_us = int(start * 1_000_000), int(end * 1_000_000)
        if self.conntrack is not None:
            segments = self.conntrack.collect(start_us, end_us)
        elif self.packets is not None:
            segments = self.packets.collect(start_us, end_us, final=final)
        else:
            segments = SEGMENTS.empty_table()
        dns = self.dns.current(start_us - 3600 * 1_000_000)
        written = 0
        if segments.num_rows:
            flows = self.builder.build(segments, dns)
            with self.store.writer(self.wait) as w:
                written = w.add_flows(flows, self.builder.host)
                rejects = self.dns.rejects + (self.packets.rejects if self.packets else [])
                if rejects:
                    w.add_rejects("agent", rejects)
                w.commit()
        self._account(segments, written)
        self._save_stats()
        log.info("flushed %s: %d record(s) from %d segment(s); %s",
                 time.strftime("%H:%M:%S", time.gmtime(start)), written, segments.num_rows,
                 self._losses())
        return written

    def _account(self, segments: pa.Table, written: int) -> None:
        s = self.stats
        s.intervals += 1
        s.records += written
        s.segments += segments.num_rows
        if segments.num_rows:
            s.connections_started += int(segments["started"].to_numpy().sum())
        if self.conntrack is not None:
            s.events, s.events_lost = self.conntrack.events_seen, self.conntrack.lost
            s.evicted, s.vanished = self.conntrack.evicted, self.conntrack.vanished
        if self.sniffer is not None:
            s.frames_dropped += self.sniffer.drops()
            s.frames_overflow = self.sniffer.overflow
            s.frame_copies = self.sniffer.copies
        s.dns_answers = self.dns.answers
        s.rejects += len(self.dns.rejects) + (len(self.packets.rejects) if self.packets else 0)
        self.dns.rejects = []
        if self.packets is not None:
            self.packets.rejects = []

    def _losses(self) -> str:
        s = self.stats
        return (f"events lost {s.events_lost}, frames dropped {s.frames_dropped} "
                f"(+{s.frames_overflow} behind), connections evicted {s.evicted}, "
                f"vanished {s.vanished}")

    def _save_stats(self) -> None:
        path = self.store.state / f"agent-{self.builder.host}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.stats), indent=1))
        os.replace(tmp, path)

    # -- reloading -----------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        now = {p: _mtime(p) for p in self.watched}
        if now == self.watched:
            return
        self.watched = now
        try:
            self.builder = self.make_builder()
        except Exception as e:  # a bad edit must not stop the agent: keep the old policies
            msg = f"reload failed, keeping the previous inventory and policies: {e}"
            self.stats.reload_errors = [*self.stats.reload_errors[-9:], msg]
            log.error(msg)
            return
        self.stats.reloads += 1
        log.info("reloaded the inventory and policies")

    def close(self) -> None:
        if self.conntrack is not None:
            self.conntrack.close()
        if self.sniffer is not None:
            self.sniffer.close()


def _mtime(path: Path) -> object:
    """A fingerprint of a file's, or a directory tree's, modification times."""
    if path.is_dir():
        return sorted((str(p), p.stat().st_mtime) for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
