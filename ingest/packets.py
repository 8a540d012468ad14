"""Columnar decoding of link, IP and transport headers: ``Frames`` → ``Packets``.

Every step is a numpy operation over a block of packets (``BLOCK`` at a time, so the
gathered headers stay in the CPU cache); no Python runs per packet except for the few
that are rejected and the DNS answers, whose payloads are copied out for ``ingest.dns``.

Link types: null/loop (0, 108), Ethernet (1) with up to two 802.1Q/802.1ad tags, raw IP
(12, 14, 101), Linux cooked v1 (113) and v2 (276), IPv4 (228), IPv6 (229). IPv6 hop-by-hop,
routing, fragment, destination-options and AH headers are skipped. Bytes are the IP
layer's (IPv4 total length; IPv6 payload length + 40), as conntrack and Calico count them,
so a capture truncated by a snaplen still counts whole packets.

The flow key of a packet is (protocol, addresses, ports); for ICMP the "ports" are the
echo identifier (echo request and reply share it, as conntrack matches them) or, for other
ICMP messages, 65536 + type × 256 + code. Non-first IP fragments have no ports (-1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ingest.frames import Frames, window
from ingest.frames import field as col
from ingest.schema import Reject

__all__ = ["BLOCK", "DNS_WIDTH", "DnsCandidates", "Packets", "Status", "decode"]

BLOCK = 32768
DNS_WIDTH = 512  # the classic UDP DNS limit; longer payloads are copied whole
_VLAN = (0x8100, 0x88A8, 0x9100)
_V6_EXT = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
_COLUMNS = ("ts_us", "number", "pv", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport",
            "dport", "ip_len", "flags", "icmp_type", "icmp_code")
_TYPES = {"ts_us": np.int64, "number": np.int64, "pv": np.int32, "src_hi": np.uint64,
          "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64, "sport": np.int32,
          "dport": np.int32, "ip_len": np.int64, "flags": np.uint8, "icmp_type": np.int16,
          "icmp_code": np.int16}


class Status(IntEnum):
    """What decoding made of a frame; everything above NOT_IP is a reject."""

    OK = 0
    NOT_IP = 1  # ARP, LLDP...: counted as skipped, not an error
    LINK_TYPE = 2
    LINK_SHORT = 3
    IP_VERSION = 4
    IP_SHORT = 5
    IHL = 6
    TOTAL_LENGTH = 7
    EXT_SHORT = 8
    L4_SHORT = 9


_LINKS = ("0 (null), 1 (Ethernet), 12, 14 or 101 (raw IP), 108 (loop), 113 (Linux cooked), "
          "228 (IPv4), 229 (IPv6) or 276 (Linux cooked v2)")
_L4_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 1: "icmp", 58: "icmpv6"}


def explain(source: str, number: int, where: int, status: Status, value: int,
            extra: int) -> Reject:
    """The reject for a frame that decoding gave ``status`` (with its ``value``/``extra``)."""
    at = f"packet {number} at byte {where}"
    if status == Status.LINK_TYPE:
        return Reject(source, at, "link type", str(value), _LINKS)
    if status == Status.LINK_SHORT:
        return Reject(source, at, "link header", f"{value} bytes captured",
                      "a whole link-layer header")
    if status == Status.IP_VERSION:
        return Reject(source, at, "ip version", str(value), "4 or 6, as the link layer says")
    if status == Status.IP_SHORT:
        return Reject(source, at, "ip header", f"{value} bytes captured",
                      "at least 20 (IPv4) or 40 (IPv6)")
    if status == Status.IHL:
        return Reject(source, at, "ipv4 header length", f"{value} bytes", "at least 20")
    if status == Status.TOTAL_LENGTH:
        return Reject(source, at, "ipv4 total length", str(value),
                      f"at least the header length {extra}")
    if status == Status.EXT_SHORT:
        return Reject(source, at, "ipv6 extension header", "truncated or more than 8",
                      "whole extension headers, at most 8")
    name = _L4_NAMES.get(extra, str(extra))
    return Reject(source, at, f"{name} header", f"{value} bytes",
                  f"at least {8 if extra in (1, 58) else 14 if extra == 6 else 4} bytes")


@dataclass
class DnsCandidates:
    """The TCP and UDP packets from port 53 (DNS responses), as ``ingest.dns`` needs them:
    up to ``DNS_WIDTH`` payload bytes of each are copied out of the chunk buffer."""

    row: np.ndarray  # int64 row in Packets
    number: np.ndarray  # int64 packet number in the file
    where: np.ndarray  # int64 file offset of its record
    proto: np.ndarray  # uint8: 6 or 17 (over TCP each message has a length prefix)
    length: np.ndarray  # int64 payload bytes captured
    truncated: np.ndarray  # bool: the capture cut the packet short (caplen < IP length)
    head: np.ndarray  # uint8 (n, up to DNS_WIDTH); bytes past ``length`` are garbage
    whole: dict[int, bytes] = field(default_factory=dict)  # payloads longer than DNS_WIDTH

    def __len__(self) -> int:
        return len(self.row)

    def payload(self, i: int) -> bytes:
        """The captured payload of candidate ``i``."""
        return self.whole.get(i) or self.head[i, :self.length[i]].tobytes()

    @classmethod
    def concat(cls, parts: list[DnsCandidates]) -> DnsCandidates:
        whole, base = {}, 0
        for part in parts:
            whole.update({base + i: v for i, v in part.whole.items()})
            base += len(part)
        if not parts:
            z = np.zeros(0, np.int64)
            return cls(row=z, number=z, where=z, proto=np.zeros(0, np.uint8), length=z,
                       truncated=np.zeros(0, bool), head=np.zeros((0, DNS_WIDTH), np.uint8))
        cols = {n: np.concatenate([getattr(p, n) for p in parts]) for n in
                ("row", "number", "where", "proto", "length", "truncated")}
        width = max(p.head.shape[1] for p in parts)
        head = np.concatenate([np.pad(p.head, ((0, 0), (0, width - p.head.shape[1])))
                               for p in parts])
        return cls(**cols, head=head, whole=whole)


@dataclass
class Packets:
    """The IP packets of one chunk as columns; addresses are two uint64 (IPv4: hi = 0)."""

    ts_us: np.ndarray  # int64
    number: np.ndarray  # int64 packet number in the file
    pv: np.ndarray  # int32 protocol | 256 for IPv6
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray  # int32 flow-key port, -1 when none
    dport: np.ndarray
    ip_len: np.ndarray  # int64 bytes at the IP layer
    flags: np.ndarray  # uint8 TCP flags, 0 otherwise
    icmp_type: np.ndarray  # int16, -1 when not ICMP
    icmp_code: np.ndarray
    dns: DnsCandidates = field(default_factory=lambda: DnsCandidates.concat([]))
    rejects: list[Reject] = field(default_factory=list)
    skipped: int = 0  # frames that are not IP (ARP, LLDP...)

    def __len__(self) -> int:
        return len(self.ts_us)


def decode(frames: Frames, name: str) -> Packets:
    """Decode every frame; bad ones become rejects (after the framing's), non-IP ones are
    counted in ``skipped``."""
    parts: list[dict[str, np.ndarray]] = []
    dns: list[DnsCandidates] = []
    rejects = list(frames.rejects)
    skipped = rows = 0
    for start in range(0, len(frames), BLOCK):
        part = slice(start, min(start + BLOCK, len(frames)))
        cols, status, value, extra = _block(frames.buf, frames.data[part],
                                            frames.caplen[part], frames.link[part])
        skipped += int(np.count_nonzero(status == Status.NOT_IP))
        rejects += [explain(name, int(frames.number[part][i]), int(frames.where[part][i]),
                            Status(int(status[i])), int(value[i]), int(extra[i]))
                    for i in np.flatnonzero(status > Status.NOT_IP)]
        keep = status == Status.OK
        cols = {k: v[keep] for k, v in cols.items()}
        cols["ts_us"] = frames.ts_us[part][keep]
        cols["number"] = frames.number[part][keep]
        cols["where"] = frames.where[part][keep]
        dns.append(_dns_candidates(frames.buf, cols, rows))
        rows += int(np.count_nonzero(keep))
        parts.append(cols)
    merged = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, _TYPES[k])
              for k in _COLUMNS}
    return Packets(**merged, dns=DnsCandidates.concat(dns), rejects=rejects, skipped=skipped)


def _block(buf: np.ndarray, data: np.ndarray, caplen: np.ndarray, link: np.ndarray,
           ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Decode one block: its columns, a ``Status`` per packet and the values it is about."""
    n = len(data)
    status = np.zeros(n, dtype=np.int8)
    value = np.zeros(n, dtype=np.int64)
    extra = np.zeros(n, dtype=np.int64)
    l3, family = _link(buf, data, caplen, link, status, value)
    fend = data + caplen
    cols = _ip(buf, l3, family, fend, status, value, extra)
    _transport(buf, cols, fend, status, value, extra)
    return cols, status, value, extra


def _link(buf: np.ndarray, data: np.ndarray, caplen: np.ndarray, link: np.ndarray,
          status: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's IP header offset and family: 4, 6, 0 (not IP) or -1 (not IP, though the
    link type says it must be)."""
    l3 = data.copy()
    family = np.zeros(len(data), dtype=np.int8)
    kinds = [int(link[0])] if (link == link[0]).all() else [int(k) for k in np.unique(link)]
    for kind in kinds:
        sel = slice(None) if len(kinds) == 1 else link == kind
        decoded = _link_kind(buf, data[sel], kind)
        if decoded is None:
            status[sel], value[sel] = Status.LINK_TYPE, kind
            continue
        family[sel], off = decoded
        l3[sel] += off
        short = caplen[sel] < off
        status[sel] = np.where(short, Status.LINK_SHORT, status[sel])
        value[sel] = np.where(short, caplen[sel], value[sel])
    status[(status == 0) & (family == 0)] = Status.NOT_IP
    return l3, family


def _link_kind(buf: np.ndarray, data: np.ndarray, kind: int,
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """(family, link header length) for frames of one link type; None if unknown."""
    n = len(data)
    if kind == 1:  # Ethernet: EtherType at 12, after up to two VLAN tags of 4 bytes each
        w = window(buf, data, 22)
        et = col(w, 12, ">u2").astype(np.int32)
        off = np.full(n, 14, dtype=np.int64)
        for at in (16, 20):
            tagged = np.isin(et, _VLAN)
            if not tagged.any():
                break
            et = np.where(tagged, col(w, at, ">u2"), et)
            off += 4 * tagged
        return _family(et), off
    if kind in (113, 276):  # Linux cooked v1: protocol at 14 of 16 bytes; v2: at 0 of 20
        et = col(window(buf, data, 16), 14 if kind == 113 else 0, ">u2").astype(np.int32)
        return _family(et), np.full(n, 16 if kind == 113 else 20, dtype=np.int64)
    if kind in (12, 14, 101, 228, 229):  # raw IP: the version nibble says which
        version = (window(buf, data, 1)[:, 0] >> 4).astype(np.int8)
        want = {228: (4,), 229: (6,)}.get(kind, (4, 6))
        return np.where(np.isin(version, want), version, -1).astype(np.int8), np.zeros(n, np.int64)
    if kind in (0, 108):  # BSD loopback: AF_ value in the writer's byte order
        w = window(buf, data, 4)
        fam = np.minimum(col(w, 0, "<u4"), col(w, 0, ">u4"))  # the other order is huge
        return np.select([fam == 2, np.isin(fam, (10, 24, 28, 30))], [4, 6], 0).astype(
            np.int8), np.full(n, 4, dtype=np.int64)
    return None


def _family(ethertype: np.ndarray) -> np.ndarray:
    return np.select([ethertype == 0x0800, ethertype == 0x86DD], [4, 6], 0).astype(np.int8)


def _ip(buf: np.ndarray, l3: np.ndarray, family: np.ndarray, fend: np.ndarray,
        status: np.ndarray, value: np.ndarray, extra: np.ndarray) -> dict[str, np.ndarray]:
    """Addresses, protocol, IP length and transport offset; sets IP-level statuses."""
    n = len(l3)
    room = len(buf) - 40
    m = window(buf, np.minimum(l3, room), 40)
    version = (m[:, 0] >> 4).astype(np.int8)
    ok = status == 0
    _flag(status, value, ok & (version != family), Status.IP_VERSION, version)
    ok = status == 0
    v6 = family == 6
    avail = fend - l3
    _flag(status, value, ok & (avail < np.where(v6, 40, 20)), Status.IP_SHORT, avail)
    ihl = (m[:, 0] & 15).astype(np.int64) * 4
    ip_len = col(m, 2, ">u2").astype(np.int64)
    v4ok = (status == 0) & ~v6
    _flag(status, value, v4ok & (ihl < 20), Status.IHL, ihl)
    bad_len = (status == 0) & ~v6 & (ip_len < ihl)
    _flag(status, value, bad_len, Status.TOTAL_LENGTH, ip_len)
    extra[bad_len] = ihl[bad_len]
    cols = {"pv": m[:, 9].astype(np.int32), "src_hi": np.zeros(n, np.uint64),
            "src_lo": col(m, 12, ">u4").astype(np.uint64), "dst_hi": np.zeros(n, np.uint64),
            "dst_lo": col(m, 16, ">u4").astype(np.uint64), "ip_len": ip_len,
            "l3": l3, "l4": l3 + ihl, "later_fragment": (col(m, 6, ">u2") & 0x1FFF) != 0}
    if v6.any():
        _ipv6(buf, m, v6, cols, fend, status)
    return cols


def _ipv6(buf: np.ndarray, m: np.ndarray, v6: np.ndarray, cols: dict[str, np.ndarray],
          fend: np.ndarray, status: np.ndarray) -> None:
    """Overwrite the IPv6 rows: 128-bit addresses, payload length + 40, and the protocol
    after the extension headers."""
    for name, at in (("src_hi", 8), ("src_lo", 16), ("dst_hi", 24), ("dst_lo", 32)):
        cols[name] = np.where(v6, col(m, at, ">u8"), cols[name])
    cols["ip_len"] = np.where(v6, col(m, 4, ">u2").astype(np.int64) + 40, cols["ip_len"])
    cols["l4"] = np.where(v6, cols["l3"] + 40, cols["l4"])
    cols["later_fragment"] &= ~v6
    nh = np.where(v6, m[:, 6], cols["pv"]).astype(np.int32)
    l4, later = cols["l4"], cols["later_fragment"]
    rows = np.flatnonzero(v6 & (status == 0) & np.isin(nh, _V6_EXT))
    for _ in range(8):  # RFC 8200 expects a handful at most
        if not len(rows):
            break
        short = l4[rows] + 8 > fend[rows]
        status[rows[short]] = Status.EXT_SHORT
        rows = rows[~short]
        w = window(buf, l4[rows], 8)
        kind = nh[rows]
        later[rows] |= (kind == 44) & ((col(w, 2, ">u2") >> 3) != 0)
        l4[rows] += np.select([kind == 44, kind == 51], [8, (w[:, 1].astype(np.int64) + 2) * 4],
                              (w[:, 1].astype(np.int64) + 1) * 8)
        nh[rows] = w[:, 0]
        rows = rows[np.isin(nh[rows], _V6_EXT)]
    status[rows] = Status.EXT_SHORT  # still more after eight
    cols["pv"] = np.where(v6, nh | 256, cols["pv"])


def _transport(buf: np.ndarray, cols: dict[str, np.ndarray], fend: np.ndarray,
               status: np.ndarray, value: np.ndarray, extra: np.ndarray) -> None:
    """Ports (or ICMP keys), TCP flags and ICMP type/code; sets the L4 status."""
    l4 = np.minimum(cols["l4"], len(buf) - 16)
    w = window(buf, l4, 16)
    proto = cols["pv"] & 255
    v6 = cols["pv"] > 255
    has = ~cols.pop("later_fragment")
    icmp = has & (((proto == 1) & ~v6) | ((proto == 58) & v6))
    ported = has & np.isin(proto, (6, 17, 132, 136))
    need = np.select([proto == 6, ported, icmp], [14, 4, 8], 0)
    room = np.minimum(fend, cols["l3"] + cols["ip_len"]) - cols["l4"]
    short = (status == 0) & has & (room < need)
    _flag(status, value, short, Status.L4_SHORT, room)
    extra[short] = proto[short]
    kind, code = w[:, 0].astype(np.int32), w[:, 1].astype(np.int32)
    echo = icmp & np.where(v6, (kind == 128) | (kind == 129), (kind == 8) | (kind == 0))
    icmp_key = np.where(echo, col(w, 4, ">u2").astype(np.int32), 65536 + kind * 256 + code)
    cols["sport"] = np.select([ported, icmp], [col(w, 0, ">u2"), icmp_key], -1).astype(np.int32)
    cols["dport"] = np.select([ported, icmp], [col(w, 2, ">u2"), icmp_key], -1).astype(np.int32)
    cols["flags"] = np.where(has & (proto == 6), w[:, 13], 0).astype(np.uint8)
    cols["icmp_type"] = np.where(icmp, kind, -1).astype(np.int16)
    cols["icmp_code"] = np.where(icmp, code, -1).astype(np.int16)
    cols["data_at"] = cols["l4"] + np.where(proto == 6, (w[:, 12] >> 4).astype(np.int64) * 4, 8)
    cols["end"] = np.minimum(fend, cols["l3"] + cols["ip_len"])
    cols["truncated"] = fend < cols["l3"] + cols["ip_len"]
    del cols["l3"], cols["l4"]


def _flag(status: np.ndarray, value: np.ndarray, where: np.ndarray, code: Status,
          values: np.ndarray) -> None:
    status[where] = code
    value[where] = values[where]


def _dns_candidates(buf: np.ndarray, cols: dict[str, np.ndarray], first_row: int,
                    ) -> DnsCandidates:
    """Copy out the payloads of TCP and UDP packets from port 53 (DNS responses)."""
    data_at, end, truncated = cols.pop("data_at"), cols.pop("end"), cols.pop("truncated")
    where = cols.pop("where")
    proto = cols["pv"] & 255
    rows = np.flatnonzero((cols["sport"] == 53) & ((proto == 17) | (proto == 6)))
    at = data_at[rows]
    length = np.maximum(end[rows] - at, 0)
    width = min(DNS_WIDTH, -(-int(length.max(initial=1)) // 8) * 8)  # as wide as needed
    head = window(buf, np.minimum(at, len(buf) - width), width)
    whole = {int(i): buf[at[i]:at[i] + length[i]].tobytes()
             for i in np.flatnonzero(length > DNS_WIDTH)}
    return DnsCandidates(first_row + rows, cols["number"][rows], where[rows],
                         proto[rows].astype(np.uint8), length, truncated[rows], head, whole)
