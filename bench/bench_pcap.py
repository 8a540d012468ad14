"""Capture reading throughput: packets per second from a pcap file to connection records.

Generates a realistic capture (default 1,000,000 packets over 20 minutes on one node):
short HTTP connections with full handshakes and teardowns, larger downloads with 1448-byte
segments, DNS queries and answers (real DNS payloads), long-lived TCP connections that span
every interval, UDP streams with idle gaps beyond the 30 s UDP timeout, and some ARP. Then
times, in ONE process pinned to one core (``os.sched_setaffinity``; child processes inherit
it) and with ``POLARS_MAX_THREADS=1``:

* tierflow: ``read_pcap`` all the way to ``SEGMENTS`` rows and DNS rows;
* scapy: ``PcapReader`` iterating the packets (dissection only, nothing aggregated), on a
  prefix of the file and extrapolated (it is far too slow for the whole file);
* dpkt: ``dpkt.pcap.Reader`` + ``dpkt.ethernet.Ethernet`` decoding each packet to its
  bidirectional 5-tuple and counting packets/bytes per connection in a dict, the fair
  equivalent of what tierflow computes;
* tshark: ``tshark -q -z conv,tcp -z conv,udp -r FILE`` (conversation tables).

Usage: ``python bench/bench_pcap.py [--packets 1000000] [--out bench/results/pcap.txt]``
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import dpkt
import numpy as np
from scapy.all import PcapReader  # all layers, so packets are dissected

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.pcap import read_pcap

SPAN_S = 1200
START_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def _template(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``"c:S:0:0 s:SA:0:80 ..."`` (side, TCP flags, payload bytes, µs after the
    previous packet) into arrays."""
    flag_bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    side, flags, size, gap = [], [], [], []
    for item in spec.split():
        s, f, n, dt = item.split(":")
        side.append(s == "s")
        flags.append(sum(flag_bits[c] for c in f))
        size.append(int(n))
        gap.append(int(dt))
    return np.array(side), np.array(flags), np.array(size), np.array(gap)


HTTP_SMALL = ("c:S:0:0 s:SA:0:90 c:A:0:60 c:PA:310:40 s:A:0:50 s:PA:620:900 c:A:0:40 "
              "c:FA:0:300 s:FA:0:60 c:A:0:50")
HTTP_LARGE = ("c:S:0:0 s:SA:0:110 c:A:0:70 c:PA:350:50 s:A:0:60 "
              + " ".join("s:A:1448:30 s:A:1448:30 c:A:0:20" for _ in range(5))
              + " s:PA:700:30 c:A:0:20 s:FA:0:200 c:FA:0:60 s:A:0:50")


def _tcp_conns(rng: np.random.Generator, n: int, spec: str, servers: np.ndarray,
               port: int) -> dict[str, np.ndarray]:
    side, flags, size, gap = _template(spec)
    start = rng.integers(0, SPAN_S * 1_000_000 - 2_000_000, n)
    client = rng.integers(0x0AF40000, 0x0AF40000 + 4000, n)
    server = rng.choice(servers, n)
    cport = rng.integers(32768, 61000, n)
    k = len(side)
    ts = start[:, None] + np.cumsum(gap)[None, :] + rng.integers(0, 40, (n, k))
    from_s = np.broadcast_to(side, (n, k))
    return {"ts": ts.ravel(), "src": np.where(from_s, server[:, None], client[:, None]).ravel(),
            "dst": np.where(from_s, client[:, None], server[:, None]).ravel(),
            "sport": np.where(from_s, port, cport[:, None]).ravel(),
            "dport": np.where(from_s, cport[:, None], port).ravel(),
            "proto": np.full(n * k, 6), "flags": np.broadcast_to(flags, (n, k)).ravel(),
            "size": np.broadcast_to(size, (n, k)).ravel(), "dns": np.zeros(n * k, bool)}


def _long_tcp(rng: np.random.Generator, n: int, per: int) -> dict[str, np.ndarray]:
    """Established connections (no handshake in the capture) alive the whole span."""
    client = np.repeat(rng.integers(0x0AF40000, 0x0AF40000 + 4000, n), per)
    server = np.repeat(rng.integers(0x0AF41000, 0x0AF41000 + 50, n), per)
    cport = np.repeat(rng.integers(32768, 61000, n), per)
    from_s = rng.random(n * per) < 0.5
    return {"ts": rng.integers(0, SPAN_S * 1_000_000, n * per),
            "src": np.where(from_s, server, client), "dst": np.where(from_s, client, server),
            "sport": np.where(from_s, 5432, cport), "dport": np.where(from_s, cport, 5432),
            "proto": np.full(n * per, 6), "flags": np.full(n * per, 24),
            "size": rng.integers(40, 400, n * per), "dns": np.zeros(n * per, bool)}


def _udp(rng: np.random.Generator, n: int, per: int) -> dict[str, np.ndarray]:
    """UDP streams (metrics) with bursts separated by idle gaps, some over 30 s."""
    src = np.repeat(rng.integers(0x0AF40000, 0x0AF40000 + 4000, n), per)
    dst = np.repeat(rng.integers(0x0AF42000, 0x0AF42000 + 5, n), per)
    sport = np.repeat(rng.integers(32768, 61000, n), per)
    base = np.repeat(rng.integers(0, SPAN_S // 2, n) * 1_000_000, per)
    gaps = rng.exponential(8_000_000, n * per).astype(np.int64)
    ts = base + np.cumsum(gaps.reshape(n, per), axis=1).ravel() % (SPAN_S * 1_000_000)
    return {"ts": ts, "src": src, "dst": dst, "sport": sport, "dport": np.full(n * per, 8125),
            "proto": np.full(n * per, 17), "flags": np.zeros(n * per, int),
            "size": rng.integers(30, 200, n * per), "dns": np.zeros(n * per, bool)}


def _dns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    client = rng.integers(0x0AF40000, 0x0AF40000 + 4000, n)
    cport = rng.integers(32768, 61000, n)
    ts = rng.integers(0, SPAN_S * 1_000_000 - 1000, n)
    both = lambda a, b: np.column_stack([a, b]).ravel()  # noqa: E731
    dns_ip = np.full(n, 0x0AF4010D)
    return {"ts": both(ts, ts + 300), "src": both(client, dns_ip), "dst": both(dns_ip, client),
            "sport": both(cport, np.full(n, 53)), "dport": both(np.full(n, 53), cport),
            "proto": np.full(2 * n, 17), "flags": np.zeros(2 * n, int),
            "size": both(np.full(n, 45), np.full(n, DNS_ANSWERS.shape[1])),
            "dns": both(np.zeros(n, bool), np.ones(n, bool))}


def _dns_answer(i: int) -> bytes:
    """``svcNNNN.default.svc.cluster.local`` CNAME ``podNNNN.default...`` A 10.96.x.y, as
    CoreDNS answers; every name gives a payload of the same length."""
    def name(label: str) -> bytes:
        return b"".join(bytes([len(p)]) + p for p in label.encode().split(b".")) + b"\0"
    owner = name(f"svc{i:04d}.default.svc.cluster.local")
    target = name(f"pod{i:04d}.default.svc.cluster.local")
    return (struct.pack(">HHHHHH", 0, 0x8580, 1, 2, 0, 0) + owner + struct.pack(">HH", 1, 1)
            + struct.pack(">HHHIH", 0xC00C, 5, 1, 5, len(target)) + target
            + struct.pack(">HHHIH", 0xC000 | (12 + len(owner) + 4 + 12), 1, 1, 5, 4)
            + bytes([10, 96, i // 256, i % 256]))


DNS_NAMES = 1000
DNS_ANSWERS = np.array([np.frombuffer(_dns_answer(i), np.uint8) for i in range(DNS_NAMES)])


def synthetic_pcap(path: Path, packets: int = 1_000_000, seed: int = 7) -> int:
    """Write a capture of about ``packets`` packets to ``path``; return the exact count."""
    rng = np.random.default_rng(seed)
    scale = packets / 1_000_000
    servers = rng.integers(0x0AF41000, 0x0AF41000 + 200, 200)
    parts = [_tcp_conns(rng, int(40_000 * scale), HTTP_SMALL, servers, 8080),
             _tcp_conns(rng, int(13_000 * scale), HTTP_LARGE, servers, 80),
             _dns(rng, int(50_000 * scale)), _long_tcp(rng, max(1, int(500 * scale)), 200),
             _udp(rng, max(1, int(1_000 * scale)), 100)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["ts"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    _write(path, cols)
    return len(order)


def _write(path: Path, c: dict[str, np.ndarray]) -> None:
    n = len(c["ts"])
    l4 = np.where(c["proto"] == 6, 20, 8)
    caplen = 34 + l4 + c["size"]
    rec = np.concatenate([[24], 24 + np.cumsum(16 + caplen)[:-1]])
    buf = np.zeros(int(rec[-1] + 16 + caplen[-1]), dtype=np.uint8)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1),
                             np.uint8)
    ts = c["ts"] + START_S * 1_000_000

    def put(at: np.ndarray, value: np.ndarray, width: int, little: bool = False) -> None:
        for k in range(width):
            shift = 8 * (k if little else width - 1 - k)
            buf[at + k] = (value >> shift) & 0xFF

    put(rec, ts // 1_000_000, 4, True)
    put(rec + 4, ts % 1_000_000, 4, True)
    put(rec + 8, caplen, 4, True)
    put(rec + 12, caplen, 4, True)
    eth = rec + 16
    put(eth + 12, np.full(n, 0x0800), 2)
    ip = eth + 14
    buf[ip] = 0x45
    put(ip + 2, 20 + l4 + c["size"], 2)
    buf[ip + 8] = 64
    buf[ip + 9] = c["proto"]
    put(ip + 12, c["src"], 4)
    put(ip + 16, c["dst"], 4)
    put(ip + 20, c["sport"], 2)
    put(ip + 22, c["dport"], 2)
    tcp = c["proto"] == 6
    buf[ip[tcp] + 32] = 0x50
    buf[ip[tcp] + 33] = c["flags"][tcp]
    put(ip[~tcp] + 24, 8 + c["size"][~tcp], 2)
    answers = ip[c["dns"]] + 28
    rng = np.random.default_rng(53)
    which = rng.zipf(1.3, len(answers)) % DNS_NAMES  # a few names are asked most often
    buf[answers[:, None] + np.arange(DNS_ANSWERS.shape[1])] = DNS_ANSWERS[which]
    put(answers, rng.integers(0, 65536, len(answers)), 2)  # query ids
    path.write_bytes(buf.tobytes())


def run_tierflow(path: Path) -> tuple[int, str]:
    rows = dns = rejects = packets = 0
    for batch in read_pcap(path):
        rows += batch.segments.num_rows
        dns += batch.dns.num_rows
        rejects += len(batch.rejects)
        packets += batch.packets
    return packets, f"{rows:,} segment rows, {dns:,} DNS rows, {rejects} rejects"


def run_dpkt(path: Path) -> tuple[int, str]:
    conns: dict[tuple[object, ...], list[int]] = {}
    n = 0
    with open(path, "rb") as f:
        for _ts, frame in dpkt.pcap.Reader(f):
            n += 1
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            l4 = ip.data
            a, b = (ip.src, getattr(l4, "sport", 0)), (ip.dst, getattr(l4, "dport", 0))
            key = (ip.p, *sorted((a, b)))
            c = conns.setdefault(key, [0, 0, 0, 0])
            side = 0 if (a, b) == key[1:] else 2
            c[side] += 1
            c[side + 1] += ip.len
    return n, f"{len(conns):,} bidirectional 5-tuples"


def run_scapy(path: Path, limit: int) -> tuple[int, str]:
    n = 0
    with PcapReader(str(path)) as reader:
        for _pkt in reader:
            n += 1
            if n >= limit:
                break
    return n, f"first {n:,} packets dissected, extrapolated"


def run_tshark(path: Path) -> tuple[int, str]:
    out = subprocess.run(["tshark", "-q", "-z", "conv,tcp", "-z", "conv,udp", "-r", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return -1, f"{out.count('<->'):,} conversations"


def timed(fn: Callable[[], tuple[int, str]]) -> tuple[float, int, str]:
    start = time.perf_counter()
    n, note = fn()
    return time.perf_counter() - start, n, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--scapy-packets", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for tierflow")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pcap.txt")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # one core, for us and for tshark (inherited)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pcap"
        total = synthetic_pcap(path, args.packets)
        size = path.stat().st_size
        lines = [f"capture: {total:,} packets, {size / 1e6:.0f} MB (synthetic: HTTP, downloads, "
                 "DNS over 1,000 names, long-lived TCP, UDP streams), one core "
                 f"(cpu {sorted(os.sched_getaffinity(0))}), Python {sys.version.split()[0]}, "
                 f"load average {os.getloadavg()[0]:.2f} at the start (a shared machine "
                 "slows every row alike)"]
        ours = min((timed(lambda: run_tierflow(path)) for _ in range(args.repeat)),
                   key=lambda r: r[0])
        results = [("tierflow read_pcap → SEGMENTS + DNS", *ours),
                   ("dpkt Reader + Ethernet → 5-tuple dict", *timed(lambda: run_dpkt(path))),
                   ("scapy PcapReader (dissect only)",
                    *timed(lambda: run_scapy(path, args.scapy_packets))),
                   ("tshark -z conv,tcp -z conv,udp", *timed(lambda: run_tshark(path)))]
        base = ours[1] / ours[0]
        lines.append(f"{'tool':42} {'packets/s':>12} {'vs tierflow':>12}  note")
        for tool, secs, n, note in results:
            rate = (n if n > 0 else total) / secs
            lines.append(f"{tool:42} {rate:12,.0f} {rate / base:11.3f}x  {secs:.2f}s, {note}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
