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

from ingest.frames import HEAD, FrameBytes, Frames, window
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


def _by_pv(v4: dict[int, int], v6: dict[int, int], dtype: type) -> np.ndarray:
    """A table indexed by ``pv`` (protocol | 256 for IPv6), from values by protocol."""
    table: np.ndarray = np.zeros(512, dtype=dtype)
    for base, values in ((0, v4), (256, v6)):
        for proto, v in values.items():
            table[base | proto] = v
    return table


# Per pv: has ports; is ICMP (of its own IP version); transport bytes its key needs.
_PORTS = {6: 1, 17: 1, 132: 1, 136: 1}
_PORTED = _by_pv(_PORTS, _PORTS, bool)
_ICMP = _by_pv({1: 1}, {58: 1}, bool)
_NEED = _by_pv({6: 14, 17: 4, 132: 4, 136: 4, 1: 8}, {6: 14, 17: 4, 132: 4, 136: 4, 58: 8},
               np.int64)


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
        head = window(frames.buf, frames.data[part], HEAD) if frames.head is None else \
            frames.head[part]
        cols, status, value, extra = _block(FrameBytes(frames.buf, frames.data[part], head),
                                            frames.caplen[part], frames.link[part])
        skipped += int(np.count_nonzero(status == Status.NOT_IP))
        rejects += [explain(name, int(frames.number[part][i]), int(frames.where[part][i]),
                            Status(int(status[i])), int(value[i]), int(extra[i]))
                    for i in np.flatnonzero(status > Status.NOT_IP)]
        ok = status == Status.OK
        keep = slice(None) if ok.all() else ok  # usually nothing to drop
        cols = {k: v[keep] for k, v in cols.items()}
        cols["ts_us"] = frames.ts_us[part][keep]
        cols["number"] = frames.number[part][keep]
        cols["where"] = frames.where[part][keep]
        dns.append(_dns_candidates(frames.buf, cols, rows))
        rows += len(cols["pv"])
        parts.append(cols)
    merged = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, _TYPES[k])
              for k in _COLUMNS}
    return Packets(**merged, dns=DnsCandidates.concat(dns), rejects=rejects, skipped=skipped)


def _block(frames: FrameBytes, caplen: np.ndarray, link: np.ndarray,
           ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Decode one block: its columns, a ``Status`` per packet and the values it is about."""
    n = len(caplen)
    status = np.zeros(n, dtype=np.int8)
    value = np.zeros(n, dtype=np.int64)
    extra = np.zeros(n, dtype=np.int64)
    l3, family = _link(frames, caplen, link, status, value)
    fend = frames.data + caplen
    cols = _ip(frames, l3, family, fend, status, value, extra)
    _transport(frames, cols, fend, status, value, extra)
    return cols, status, value, extra


def _link(frames: FrameBytes, caplen: np.ndarray, link: np.ndarray,
          status: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's IP header offset and family: 4, 6, 0 (not IP) or -1 (not IP, though the
    link type says it must be)."""
    l3 = frames.data.copy()
    family = np.zeros(len(l3), dtype=np.int8)
    kinds = [int(link[0])] if (link == link[0]).all() else [int(k) for k in np.unique(link)]
    for kind in kinds:
        sel = slice(None) if len(kinds) == 1 else link == kind
        decoded = _link_kind(frames.head[sel], kind)
        if decoded is None:
            status[sel], value[sel] = Status.LINK_TYPE, kind
            continue
        family[sel], off = decoded
        l3[sel] += off
        short = caplen[sel] < off
        if short.any():
            status[sel] = np.where(short, Status.LINK_SHORT, status[sel])
            value[sel] = np.where(short, caplen[sel], value[sel])
    _flag(status, value, (family == 0) & (status == 0), Status.NOT_IP, value)
    return l3, family


def _link_kind(head: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(family, link header length) for frames of one link type (their ``head`` bytes);
    None if unknown."""
    n = len(head)
    if kind == 1:  # Ethernet: EtherType at 12, after up to two VLAN tags of 4 bytes each
        w = head
        et = col(w, 12, ">u2").astype(np.int32)
        off = np.full(n, 14, dtype=np.int64)
        for at in (16, 20):
            tagged = (et == _VLAN[0]) | (et == _VLAN[1]) | (et == _VLAN[2])
            if not tagged.any():
                break
            et = np.where(tagged, col(w, at, ">u2"), et)
            off += 4 * tagged
        return _family(et), off
    if kind in (113, 276):  # Linux cooked v1: protocol at 14 of 16 bytes; v2: at 0 of 20
        et = col(head[:, :16], 14 if kind == 113 else 0, ">u2").astype(np.int32)
        return _family(et), np.full(n, 16 if kind == 113 else 20, dtype=np.int64)
    if kind in (12, 14, 101, 228, 229):  # raw IP: the version nibble says which
        version = (head[:, 0] >> 4).astype(np.int8)
        want = {228: (4,), 229: (6,)}.get(kind, (4, 6))
        return np.where(np.isin(version, want), version, -1).astype(np.int8), np.zeros(n, np.int64)
    if kind in (0, 108):  # BSD loopback: AF_ value in the writer's byte order
        w = head[:, :4]
        fam = np.minimum(col(w, 0, "<u4"), col(w, 0, ">u4"))  # the other order is huge
        return np.select([fam == 2, np.isin(fam, (10, 24, 28, 30))], [4, 6], 0).astype(
            np.int8), np.full(n, 4, dtype=np.int64)
    return None


def _family(ethertype: np.ndarray) -> np.ndarray:
    family: np.ndarray = ((ethertype == 0x0800).view(np.int8) * 4
                          + (ethertype == 0x86DD).view(np.int8) * 6)
    return family


def _ip(frames: FrameBytes, l3: np.ndarray, family: np.ndarray, fend: np.ndarray,
        status: np.ndarray, value: np.ndarray, extra: np.ndarray) -> dict[str, np.ndarray]:
    """Addresses, protocol, IP length and transport offset; sets IP-level statuses."""
    n = len(l3)
    m = frames.at(l3, 40)
    # three reads of the (strided) header; the fields are cut from them with shifts
    word = col(m, 0, ">u8").astype(np.uint64)  # version/IHL, TOS, length, id, fragment
    addresses = col(m, 12, ">u8").astype(np.uint64)  # IPv4 source and destination
    version = (word >> np.uint64(60)).astype(np.int8)
    _flag(status, value, (version != family) & (status == 0), Status.IP_VERSION, version)
    v6 = family == 6
    avail = fend - l3
    _flag(status, value, (avail < np.where(v6, 40, 20)) & (status == 0), Status.IP_SHORT,
          avail)
    ihl = ((word >> np.uint64(56)) & np.uint64(15)).astype(np.int64) * 4
    ip_len = ((word >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
    v4ok = (status == 0) & ~v6
    _flag(status, value, v4ok & (ihl < 20), Status.IHL, ihl)
    bad_len = (status == 0) & ~v6 & (ip_len < ihl)
    if _flag(status, value, bad_len, Status.TOTAL_LENGTH, ip_len):
        extra[bad_len] = ihl[bad_len]
    cols = {"pv": m[:, 9].astype(np.int32), "src_hi": np.zeros(n, np.uint64),
            "src_lo": addresses >> np.uint64(32), "dst_hi": np.zeros(n, np.uint64),
            "dst_lo": addresses & np.uint64(0xFFFFFFFF), "ip_len": ip_len,
            "l3": l3, "l4": l3 + ihl, "later_fragment": (word & np.uint64(0x1FFF)) != 0}
    if v6.any():
        _ipv6(frames.buf, m, v6, cols, fend, status)
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


def _transport(frames: FrameBytes, cols: dict[str, np.ndarray], fend: np.ndarray,
               status: np.ndarray, value: np.ndarray, extra: np.ndarray) -> None:
    """Ports (or ICMP keys), TCP flags and ICMP type/code; sets the L4 status."""
    w = frames.at(cols["l4"], 16)
    pv = cols["pv"]
    has = ~cols.pop("later_fragment")
    icmp = has & _ICMP[pv]
    ported = has & _PORTED[pv]
    ip_end = cols["l3"] + cols["ip_len"]
    end = np.minimum(fend, ip_end)
    room = end - cols["l4"]
    short = (status == 0) & has & (room < _NEED[pv])
    if _flag(status, value, short, Status.L4_SHORT, room):
        extra[short] = pv[short] & 255
    ports = col(w, 0, ">u4").astype(np.int64)  # source and destination port
    cols["sport"] = np.where(ported, ports >> 16, -1).astype(np.int32)
    cols["dport"] = np.where(ported, ports & 0xFFFF, -1).astype(np.int32)
    cols["icmp_type"] = np.full(len(pv), -1, dtype=np.int16)
    cols["icmp_code"] = np.full(len(pv), -1, dtype=np.int16)
    if icmp.any():
        _icmp(w, pv, icmp, cols)
    tcp = (pv & 255) == 6
    cols["flags"] = w[:, 13] * (has & tcp)
    cols["data_at"] = cols["l4"] + np.where(tcp, (w[:, 12] >> 4).astype(np.int64) * 4, 8)
    cols["end"] = end
    cols["truncated"] = fend < ip_end
    del cols["l3"], cols["l4"]


def _icmp(w: np.ndarray, pv: np.ndarray, icmp: np.ndarray, cols: dict[str, np.ndarray],
          ) -> None:
    """The flow-key ports and type/code of the ICMP packets (``icmp``)."""
    kind, code = w[:, 0].astype(np.int32), w[:, 1].astype(np.int32)
    echo = icmp & np.where(pv > 255, (kind == 128) | (kind == 129), (kind == 8) | (kind == 0))
    key = np.where(echo, col(w, 4, ">u2").astype(np.int32), 65536 + kind * 256 + code)
    cols["sport"] = np.where(icmp, key, cols["sport"])
    cols["dport"] = np.where(icmp, key, cols["dport"])
    cols["icmp_type"] = np.where(icmp, kind, -1).astype(np.int16)
    cols["icmp_code"] = np.where(icmp, code, -1).astype(np.int16)


def _flag(status: np.ndarray, value: np.ndarray, where: np.ndarray, code: Status,
          values: np.ndarray) -> bool:
    """Give the packets ``where`` the status ``code``; whether there were any."""
    if not where.any():
        return False
    status[where] = code
    value[where] = values[where]
    return True


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
