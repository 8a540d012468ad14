"""DNS answers seen in a capture → ``DNS`` rows (which name a client resolved to which IP).

Only responses from port 53 are read (``packets.DnsCandidates``), over UDP or TCP. Each
address record reached from the QUESTION name through the answer section, following
CNAME chains in any order, gives one row: the time of the response, the client (the
response's destination), the question name (lower case, no trailing dot), the address and
that address record's TTL. Answers with a non-zero RCODE give no rows.

Parsing is plain Python, but once per distinct response: answers that differ only in the
query id (most of them, in a cluster) are grouped with numpy first, and a read remembers
the answers it has parsed (``dns_table``'s ``parsed``). A malformed response,
or one the capture cut short, is a ``Reject``; TCP segments that do not hold whole
messages (a response split over several segments) are skipped, since only reassembly
could read them.
"""

from __future__ import annotations

import socket
import struct

import numpy as np
import pyarrow as pa

from ingest.packets import DNS_WIDTH, DnsCandidates, Packets
from ingest.schema import DNS, Reject, conform
from ingest.segmenttable import ip_strings

__all__ = ["Answers", "DnsError", "dns_table", "parse_response"]

_A, _CNAME, _AAAA = 1, 5, 28
_MAX_JUMPS = 32  # compression pointers followed for one name; more means a loop


class DnsError(ValueError):
    """A DNS message that cannot be parsed; the message says what and where."""


Answers = list[tuple[str, str, int]]  # (question name, address, TTL)
_PARSED = 1 << 16  # responses remembered by dns_table's ``parsed``; then it starts over


def dns_table(packets: Packets, source: str, known: dict[int, str] | None = None,
              parsed: dict[bytes, Answers | DnsError] | None = None,
              ) -> tuple[pa.Table, list[Reject]]:
    """The ``DNS`` rows of the responses among ``packets``, and rejects for bad ones;
    ``known`` caches address texts (see ``segmenttable.ip_strings``), ``parsed`` the
    answers of UDP responses by their bytes after the query id (pass the same dict for
    every chunk of a read: a cluster asks for the same names all day).

    Responses with the same bytes but for the query id are parsed once, and their rows
    are repeated for every packet that carried them.
    """
    c = packets.dns
    _, rep, group = np.unique(_groups(c), return_index=True, return_inverse=True)
    group = group.reshape(-1)
    parsed = {} if parsed is None else parsed
    if len(parsed) > _PARSED:
        parsed.clear()
    results = [_parse_cached(c, i, parsed) for i in rep.tolist()]
    rows, answers = _spread(results, group, c.row)
    failed = {g for g, r in enumerate(results) if isinstance(r, DnsError)}
    rejects = [_reject(c, i, source, results[g]) for i, g in enumerate(group.tolist())
               if g in failed] if failed else []
    return _table(packets, rows, answers, known), rejects


def _spread(results: list[Answers | DnsError], group: np.ndarray, row: np.ndarray,
            ) -> tuple[np.ndarray, list[pa.Array]]:
    """Each packet's row number repeated once per answer of its group, and the answers'
    names, addresses and TTLs, as arrays aligned with it (Arrow ``take`` spreads them, so
    no Python object is made per row)."""
    answers = [r if isinstance(r, list) else [] for r in results]
    count = np.array([len(a) for a in answers], dtype=np.int64)
    per = count[group]  # answers per packet
    first = np.cumsum(count) - count  # where each group's answers start
    at = (np.repeat(first[group], per) + np.arange(int(per.sum()))
          - np.repeat(np.cumsum(per) - per, per))
    flat = [a for group_answers in answers for a in group_answers]
    columns = [pa.array([a[k] for a in flat], pa.string() if k < 2 else pa.int64())
               for k in range(3)]
    return np.repeat(row, per), [col.take(at) for col in columns]


def _groups(c: DnsCandidates) -> np.ndarray:
    """A group id per candidate: the index of the first candidate whose payload is the
    same but for the query id. TCP, long and cut-short payloads are their own group.
    Equality is checked byte by byte, so a hash collision only splits a group."""
    group = np.arange(len(c))
    idx = np.flatnonzero((c.proto == 17) & (c.length <= DNS_WIDTH) & ~c.truncated)
    if not len(idx):
        return group
    width = min(c.head.shape[1], -(-int(c.length[idx].max()) // 8) * 8 or 8)
    head = c.head[idx, :width].copy()
    head[:, :2] = 0  # the query id
    head[np.arange(width)[None, :] >= c.length[idx][:, None]] = 0
    h = (head.view(np.uint64) * _WEIGHTS[None, :width // 8]).sum(axis=1, dtype=np.uint64)
    h ^= c.length[idx].astype(np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    rep = first[inverse.reshape(-1)]
    same = (head == head[rep]).all(axis=1)
    group[idx] = np.where(same, idx[rep], idx)
    return group


_WEIGHTS = (np.random.default_rng(53).integers(1, 2**63, DNS_WIDTH // 8, dtype=np.int64)
            .astype(np.uint64) | np.uint64(1))


def _parse_cached(c: DnsCandidates, i: int, parsed: dict[bytes, Answers | DnsError],
                  ) -> Answers | DnsError:
    """``_parse_one``, remembered for whole UDP responses (whose answers depend on
    their bytes alone, the query id aside)."""
    if c.proto[i] != 17 or c.truncated[i] or c.length[i] < 12:
        return _parse_one(c, i)
    key = c.payload(i)[2:]
    hit = parsed.get(key)
    if hit is None:
        hit = parsed[key] = _parse_one(c, i)
    return hit


def _parse_one(c: DnsCandidates, i: int) -> Answers | DnsError:
    if c.truncated[i]:
        return DnsError(f"cut short by the capture: {c.length[i]} bytes captured")
    try:
        return [a for m in _messages(int(c.proto[i]), c.payload(i)) for a in parse_response(m)]
    except DnsError as e:
        return e


def _reject(c: DnsCandidates, i: int, source: str, error: object) -> Reject:
    return Reject(source, f"packet {c.number[i]} at byte {c.where[i]}", "dns", str(error),
                  "a whole, well-formed DNS response", c.payload(i))


def _messages(proto: int, payload: bytes) -> list[bytes]:
    """The whole DNS messages in one payload (TCP prefixes each with its length)."""
    if proto == 17:
        return [payload]
    out, pos = [], 0
    while pos + 2 <= len(payload):
        (length,) = struct.unpack_from(">H", payload, pos)
        if pos + 2 + length > len(payload):
            break  # continues in a later segment: needs reassembly
        out.append(payload[pos + 2:pos + 2 + length])
        pos += 2 + length
    return out


def parse_response(msg: bytes) -> Answers:
    """The (question name, address, TTL) answers of one DNS response; none for a query,
    an error RCODE or a response without a question.

    >>> parse_response(bytes.fromhex("0001818000010001000000000178000001000"
    ...     "1c00c0001000100000e1000040a000001"))
    [('x', '10.0.0.1', 3600)]
    """
    try:
        return _answers(msg)
    except (IndexError, struct.error):
        raise DnsError(f"runs past its end ({len(msg)} bytes)") from None


def _answers(msg: bytes) -> Answers:
    if len(msg) < 12:
        raise DnsError(f"{len(msg)} bytes, shorter than the 12-byte header")
    flags, qdcount, ancount = struct.unpack_from(">2xHHH", msg)
    if not flags & 0x8000 or flags & 0x000F or not qdcount:
        return []  # a query, an error (NXDOMAIN, REFUSED...) or no question
    names: dict[int, str] = {}  # name by offset, for compression pointers
    qname, pos = _name(msg, 12, names)
    pos += 4  # QTYPE, QCLASS
    for _ in range(qdcount - 1):
        pos = _name(msg, pos, names)[1] + 4
    cnames: dict[str, str] = {}
    found: list[tuple[str, str, int]] = []
    for _ in range(ancount):
        owner, pos = _name(msg, pos, names)
        rtype, _cls, ttl, rdlen = _RR(msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsError(f"record data at byte {pos} runs past its end ({len(msg)} bytes)")
        if rtype == _CNAME:
            cnames[owner] = _name(msg, pos, names)[0]
        elif rtype == _A and rdlen == 4:
            found.append((owner, socket.inet_ntoa(msg[pos:pos + 4]), ttl))
        elif rtype == _AAAA and rdlen == 16:
            found.append((owner, socket.inet_ntop(socket.AF_INET6, msg[pos:pos + 16]), ttl))
        pos += rdlen
    reached = {qname}
    while more := {t for o, t in cnames.items() if o in reached} - reached:
        reached |= more
    return [(qname, ip, ttl) for owner, ip, ttl in found if owner in reached]


_RR = struct.Struct(">HHIH").unpack_from


def _name(msg: bytes, start: int, names: dict[int, str]) -> tuple[str, int]:
    """The (lower-case, dot-joined) name at ``start`` and the offset after it; ``names``
    caches names by offset, so pointers to a name already read cost one lookup."""
    labels: list[bytes] = []
    pos, end, jumps, tail = start, -1, 0, ""
    while True:
        length = msg[pos]
        if not length:
            break
        if length < 64:
            labels.append(msg[pos + 1:pos + 1 + length])
            pos += 1 + length
            continue
        if length < 0xC0:
            raise DnsError(f"label type {length >> 6} at byte {pos}")
        target = ((length & 0x3F) << 8) | msg[pos + 1]
        if end < 0:
            end = pos + 2
        if target in names:
            tail = names[target]
            break
        jumps += 1
        if jumps > _MAX_JUMPS:
            raise DnsError(f"compression pointers loop at byte {pos}")
        pos = target
    text = b".".join(labels).decode("ascii", "backslashreplace").lower()
    name = f"{text}.{tail}" if text and tail else text or tail
    names[start] = name
    return name, end if end >= 0 else pos + 1


def _table(packets: Packets, rows: np.ndarray, answers: list[pa.Array],
           known: dict[int, str] | None) -> pa.Table:
    names, ips, ttls = answers
    table = pa.table({
        "time": pa.array(packets.ts_us[rows], pa.timestamp("us", tz="UTC")),
        "client_ip": ip_strings(packets.dst_hi[rows], packets.dst_lo[rows],
                                packets.pv[rows] > 255, known),
        "name": names, "ip": ips, "ttl": ttls,
    })
    return conform(table, DNS)
