"""Hand-built capture files for the reader tests: pcap and pcapng containers written with
``struct`` (so every header field, byte order and malformation is under the test's
control) around frames built with scapy."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from ingest.pcap import CaptureBatch, read_pcap
from ingest.schema import SEGMENTS, Reject

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs, a multiple of any interval
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def eth(pkt: Packet) -> bytes:
    """``pkt`` (an IP or IPv6 packet) in an Ethernet frame."""
    return bytes(Ether(**MAC) / pkt)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, payload: bytes = b"") -> Packet:
    ip = IPv6 if ":" in src else IP
    return ip(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / payload


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> Packet:
    ip = IPv6 if ":" in src else IP
    return ip(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def icmp_echo(src: str, dst: str, reply: bool, ident: int = 7, seq: int = 1) -> Packet:
    return IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=ident, seq=seq) / b"ping"


def arp() -> bytes:
    return bytes(Ether(src=MAC["src"], dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"))


def dns_answer(client: str, name: str, answers: list[tuple[str, int, str, str]],
               ident: int = 1, rcode: int = 0, server: str = "10.0.0.53",
               cport: int = 40000) -> Packet:
    """A DNS response to ``client``; ``answers`` are (owner, ttl, type, rdata)."""
    records = [DNSRR(rrname=o, ttl=t, type=k, rdata=d) for o, t, k, d in answers]
    msg = DNS(id=ident, qr=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=name), an=records)
    return IP(src=server, dst=client) / UDP(sport=53, dport=cport) / msg


def pcap(records: list[tuple[int, bytes]], link: int = 1, snaplen: int = 262144,
         order: str = "<", nano: bool = False, caplen: int | None = None) -> bytes:
    """A classic pcap of (µs timestamp, frame) records; ``caplen`` truncates each frame
    as tcpdump's ``-s`` does (the original length is kept)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link)]
    for ts, frame in records:
        out.append(record(ts, frame, order, nano, caplen))
    return b"".join(out)


def record(ts: int, frame: bytes, order: str = "<", nano: bool = False,
           caplen: int | None = None) -> bytes:
    data = frame[:caplen] if caplen is not None else frame
    frac = ts % 1_000_000 * (1000 if nano else 1)
    return struct.pack(order + "IIII", ts // 1_000_000, frac, len(data), len(frame)) + data


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    """A pcapng block: type, length, body padded to 4 bytes, length again."""
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def idb(link: int = 1, snaplen: int = 0, tsresol: int | None = None, order: str = "<") -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack(order + "HHB3x", 9, 1, tsresol) + struct.pack(order + "HH", 0, 0)
    return block(1, struct.pack(order + "HHI", link, 0, snaplen) + options, order)


def epb(ts_units: int, frame: bytes, iface: int = 0, order: str = "<",
        origlen: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, ts_units >> 32, ts_units & 0xFFFFFFFF,
                       len(frame), origlen if origlen is not None else len(frame))
    return block(6, head + frame, order)


def spb(frame: bytes, order: str = "<") -> bytes:
    return block(3, struct.pack(order + "I", len(frame)) + frame, order)


def obsolete_pb(ts_units: int, frame: bytes, iface: int = 0, order: str = "<") -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, ts_units >> 32, ts_units & 0xFFFFFFFF,
                       len(frame), len(frame))
    return block(2, head + frame, order)


@dataclass
class Read:
    """Everything one ``read_pcap`` call gave, batches merged."""

    segments: list[dict[str, Any]]
    dns: list[dict[str, Any]]
    rejects: list[Reject]
    packets: int
    skipped: int
    batches: list[CaptureBatch]


def read_all(data: bytes, **kwargs: Any) -> Read:
    """``read_pcap`` over ``data`` (named ``t.pcap``), with its batches merged."""
    kwargs.setdefault("name", "t.pcap")
    batches = list(read_pcap(io.BytesIO(data), **kwargs))
    segments = pa.concat_tables([SEGMENTS.empty_table()] + [b.segments for b in batches])
    return Read(segments=segments.to_pylist(),
                dns=[r for b in batches for r in b.dns.to_pylist()],
                rejects=[r for b in batches for r in b.rejects],
                packets=sum(b.packets for b in batches), skipped=sum(b.skipped for b in batches),
                batches=batches)


def brief(row: dict[str, Any]) -> tuple[Any, ...]:
    """The fields of a segment row that most tests compare, times as µs after ``T0``."""
    start = int(row["start_time"].timestamp() * 1_000_000) - T0
    conn_start = round(row["conn_start"].timestamp() * 1_000_000) - T0
    return (start, row["conn_id"], conn_start, row["proto"], row["src_ip"], row["src_port"],
            row["dst_ip"], row["dst_port"], row["packets_fwd"], row["bytes_fwd"],
            row["packets_rev"], row["bytes_rev"], row["started"], row["completed"])
