"""Conntrack table snapshots, and the connection segments they imply.

A snapshot is the text of ``conntrack -L -o extended`` (also ``-o extended,id``,
``-o extended,id,ktimestamp``, or without ``extended``) or of ``/proc/net/nf_conntrack``, taken
at one time. One line is one entry: the ORIGINAL tuple (the initiator's first packet), the
REPLY tuple (what the responder sends, so its source is the real, post-DNAT responder), and
per-direction counters when ``net.netfilter.nf_conntrack_acct=1``::

    ipv4     2 tcp      6 118 TIME_WAIT src=10.244.1.11 dst=10.96.0.50 sport=38726 dport=80
    packets=6 bytes=394 src=10.244.1.12 dst=10.244.1.11 sport=8080 dport=38726 packets=6
    bytes=1277 [ASSURED] mark=0 delta-time=2 [start=Fri Nov 27 14:29:20 2026] use=1 id=2360392305

:func:`parse_conntrack` turns one snapshot into an Arrow table (``ENTRIES``) with polars string
kernels; a line it cannot use becomes a :class:`~ingest.schema.Reject` naming the field, and
the other lines still parse. :func:`segments` turns consecutive snapshots into
``ingest.schema.SEGMENTS`` rows, one per connection and flush interval:

* identity: (zone, protocol, original tuple), plus the conntrack ``id=`` and the start time
  when both snapshots show them; a counter that went down, or a TCP entry that left
  TIME_WAIT/CLOSE, also means the tuple was reused by a new connection;
* counters are cumulative, so a row gets the increase since the previous snapshot (the whole
  counter when first seen); snapshots within one interval sum into one row;
* ``started`` is set on a connection's first row, unless ``previous`` already had it; in the
  very first snapshot with no ``previous``, a known start time must fall in the row's interval;
* ``completed`` is set in the interval of the first snapshot where the entry is in TCP state
  TIME_WAIT or CLOSE (Felix expires such entries early: ``State >= TCP_CONNTRACK_TIME_WAIT``
  in ``felix/collector``) or is gone although the previous snapshot had it (that row has zero
  increases). Later rows of a completed connection appear only if its counters still grow.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from ingest.schema import SEGMENTS, Reject

__all__ = ["ENTRIES", "Snapshot", "parse_conntrack", "segments"]

_TS = pa.timestamp("us", tz="UTC")
ENTRIES = pa.schema(
    [
        pa.field("line", pa.int32(), nullable=False),  # 1-based line number in the source
        pa.field("family", pa.uint8(), nullable=False),  # 4 or 6
        pa.field("proto", pa.uint8(), nullable=False),  # IP protocol number
        pa.field("timeout", pa.int64(), nullable=False),  # seconds left
        pa.field("state", pa.string()),  # TCP/SCTP/DCCP state, e.g. ESTABLISHED
        *(pa.field(f"{d}_{s}_ip", pa.string(), nullable=False)  # IPv6 in compressed form
          for d in ("orig", "reply") for s in ("src", "dst")),
        *(pa.field(f"{d}_{s}_port", pa.int32()) for d in ("orig", "reply") for s in ("src", "dst")),
        pa.field("icmp_type", pa.int16()),  # original direction, ICMP and ICMPv6
        pa.field("icmp_code", pa.int16()),
        pa.field("icmp_id", pa.int32()),
        pa.field("gre_src_key", pa.int64()),  # GRE keys (PPTP call ids)
        pa.field("gre_dst_key", pa.int64()),
        *(pa.field(f"{d}_{c}", pa.int64())  # null without nf_conntrack_acct
          for d in ("orig", "reply") for c in ("packets", "bytes")),
        pa.field("unreplied", pa.bool_(), nullable=False),
        pa.field("assured", pa.bool_(), nullable=False),
        pa.field("mark", pa.int64()),
        pa.field("zone", pa.int32(), nullable=False),  # 0 when not shown
        pa.field("use", pa.int32()),
        pa.field("ct_id", pa.int64()),  # conntrack id (-o id), not in /proc
        pa.field("delta_time", pa.int64()),  # seconds since start (nf_conntrack_timestamp)
        pa.field("start", _TS),  # [start=...] of -o ktimestamp
    ],
    metadata={b"tierflow.schema": b"conntrack_entries"},
)

_IPS = ["orig_src_ip", "orig_dst_ip", "reply_src_ip", "reply_dst_ip"]
_PORTS = (6, 17, 33, 132, 136)  # tcp, udp, dccp, sctp, udplite: tuples carry sport/dport
_ICMPS = (1, 58)
# Felix reports TCP connections expired from State >= TIME_WAIT; that also catches
# SYN_SENT2 (a simultaneous open), which is a connection starting, so we leave it out.
_ENDED = ("TIME_WAIT", "CLOSE")
# Each pattern is one-pass (every byte has one way forward), so polars runs it fast.
_HEAD = r"^([a-z][a-z0-9]*) +(\d+) +(?:([a-z][a-z0-9]*) +(\d+) +)?(\d+)(?: +([A-Z][A-Z0-9_]*))?"
_TUPLE = (r"^(\S+) dst=(\S+) (?:s(?:port=(\d+) dport=(\d+)|rckey=0x([0-9a-f]+) "
          r"dstkey=0x([0-9a-f]+)) |type=(\d+) code=(\d+) id=(\d+) )?"
          r"(?:packets=(\d+) bytes=(\d+) )?")
# The entry's own fields after the reply tuple, raw; a value that does not convert is an error.
_TAIL = {"mark": r"mark=(\S+)", "zone": r"zone=(\S+)", "delta_time": r"delta-time=(\S+)",
         "start": r"\[start=([^\]]*)\]"}
_USE_ID = r"use=(\S+)(?: id=(\S+))?"  # the conntrack id follows use=; an ICMP id= comes earlier
_SUMMARY = r"^conntrack v[0-9.]+ \(conntrack-tools\): \d+ flow entries have been shown\.$"
_V4 = r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$"
_CTIME = "%a %b %d %H:%M:%S %Y"  # ctime(3), in the local time of the machine that ran conntrack


@dataclass(frozen=True)
class Snapshot:
    """One conntrack table listing: ``entries`` (schema ``ENTRIES``) as of ``time`` (UTC)."""

    time: datetime
    entries: pa.Table
    rejects: list[Reject]
    source: str


def parse_conntrack(text: str, *, source: str, time: datetime, tz: str = "UTC") -> Snapshot:
    """Parse the listing taken at ``time``: one ``ENTRIES`` row per line, bad lines become
    rejects (``snap.txt: line 7: sport: 'x' (expected a port 0-65535)``), blank lines and
    conntrack's ``N flow entries have been shown.`` are skipped. ``tz`` is the zone of the
    ``[start=...]`` stamps, which conntrack prints in its machine's local time."""
    if time.tzinfo is None:
        raise ValueError(f"{source}: snapshot time must be timezone-aware (got {time!r})")
    lines = pl.DataFrame({"raw": [text]}).select(pl.col("raw").str.split("\n")).explode("raw")
    lines = lines.with_row_index("line", offset=1).with_columns(pl.col("raw").str.strip_chars())
    summary = pl.col("raw").str.starts_with("conntrack v") & pl.col("raw").str.contains(_SUMMARY)
    lines = lines.filter((pl.col("raw") != "") & ~summary)
    table = _typed(_fields(lines), tz)
    bad = table.filter(~pl.col("ok"))
    rejects = [_reject(source, n, raw) for n, raw in zip(bad["line"], bad["raw"], strict=True)]
    good = table.filter(pl.col("ok")).select(ENTRIES.names).to_arrow()
    return Snapshot(time.astimezone(UTC), good.cast(ENTRIES), rejects, source)


def _fields(lines: pl.DataFrame) -> pl.DataFrame:
    """The raw text of every field, by position: head, original tuple, reply tuple and tail."""
    parts = pl.col("raw").str.splitn(" src=", 3).struct.rename_fields(["head", "orig", "rep"])
    df = lines.with_columns(parts.alias("p")).unnest("p")
    head = pl.col("head").str.extract_groups(_HEAD).struct.rename_fields(
        ["name", "num", "l4", "l4num", "timeout", "state"])
    tup = ["src_ip", "dst_ip", "src_port", "dst_port", "src_key", "dst_key", "icmp_type",
           "icmp_code", "icmp_id", "packets", "bytes"]
    orig = (pl.col("orig") + " ").str.extract_groups(_TUPLE).struct.rename_fields(
        [f"orig_{c}" for c in tup])
    rep = (pl.col("rep") + " ").str.extract_groups(_TUPLE).struct.rename_fields(
        [f"reply_{c}" for c in tup])
    tail = [pl.col("rep").str.extract(p, 1).alias(f"{k}_raw") for k, p in _TAIL.items()]
    use_id = pl.col("rep").str.extract_groups(_USE_ID).struct.rename_fields(["use_raw",
                                                                            "ct_id_raw"])
    return df.select(
        "line", "raw", head.alias("h"), orig.alias("o"), rep.alias("r"), use_id.alias("u"),
        *tail,
        orig_counted=pl.col("orig").str.contains("packets=", literal=True),
        reply_counted=pl.col("rep").str.contains("packets=", literal=True),
        unreplied=pl.col("orig").str.contains("[UNREPLIED]", literal=True).fill_null(False),
        assured=pl.col("rep").str.contains("[ASSURED]", literal=True).fill_null(False),
    ).unnest("h", "o", "r", "u")


def _typed(df: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Typed columns and ``ok``: whether every field the line has is well-formed."""
    extended = pl.col("l4").is_not_null()
    n = pl.col

    def num(c: str, hi: int) -> pl.Expr:
        v = n(c).cast(pl.Int64, strict=False)
        return pl.when(v.is_between(0, hi)).then(v)

    v6 = _v6_forms(df)
    df = df.with_columns(
        l3=pl.when(extended).then(n("name").replace_strict(
            {"ipv4": 4, "ipv6": 6}, default=0, return_dtype=pl.UInt8)),
        family=pl.when(n("orig_src_ip").str.contains(":", literal=True)).then(6).otherwise(4)
        .cast(pl.UInt8),
        proto=pl.when(extended).then(num("l4num", 255)).otherwise(num("num", 255)),
        timeout=num("timeout", 2**62),
        **{c: pl.when(n(c).str.contains(_V4)).then(n(c)).otherwise(n(c).replace_strict(
            v6, default=None, return_dtype=pl.String) if v6 else None) for c in _IPS},
        **{f"{d}_{s}_port": num(f"{d}_{s}_port", 65535) for d in ("orig", "reply")
           for s in ("src", "dst")},
        icmp_type=num("orig_icmp_type", 255), icmp_code=num("orig_icmp_code", 255),
        icmp_id=num("orig_icmp_id", 65535),
        gre_src_key=n("orig_src_key").str.to_integer(base=16, strict=False),
        gre_dst_key=n("orig_dst_key").str.to_integer(base=16, strict=False),
        **{f"{d}_{c}": num(f"{d}_{c}", 2**62) for d in ("orig", "reply")
           for c in ("packets", "bytes")},
        mark=num("mark_raw", 2**32 - 1), zone=num("zone_raw", 65535),
        use=num("use_raw", 2**31 - 1), ct_id=num("ct_id_raw", 2**32 - 1),
        delta_time=num("delta_time_raw", 2**62),
        start=n("start_raw").str.replace_all(" +", " ").str.strptime(
            pl.Datetime("us"), _CTIME, strict=False).dt.replace_time_zone(
            tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC"),
    )
    return df.with_columns(ok=_valid(extended).fill_null(False), zone=n("zone").fill_null(0))


def _v6_forms(df: pl.DataFrame) -> dict[str, str | None]:
    """Compressed forms of the distinct strings with a colon (``/proc`` writes IPv6 in full),
    None for non-addresses: only these reach :mod:`ipaddress`."""
    ips = pl.concat([df.get_column(c) for c in _IPS]).drop_nulls()
    return {s: _v6(s) for s in ips.filter(ips.str.contains(":", literal=True)).unique()}


def _v6(text: str) -> str | None:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def _valid(extended: pl.Expr) -> pl.Expr:
    n = pl.col
    fam = [n(c).str.contains(":", literal=True) for c in _IPS]
    ported, icmp = n("proto").is_in(_PORTS), n("proto").is_in(_ICMPS)
    checks = [
        n("proto").is_not_null(), n("timeout").is_not_null(),
        ~extended | (n("l3") == n("family")),
        *(n(c).is_not_null() for c in _IPS),
        *(f == fam[0] for f in fam[1:]),
        ~ported | pl.all_horizontal(n(f"{d}_{s}_port").is_not_null()
                                    for d in ("orig", "reply") for s in ("src", "dst")),
        ~icmp | pl.all_horizontal(n(c).is_not_null() for c in ("icmp_type", "icmp_code",
                                                               "icmp_id")),
        *(~n(f"{d}_counted") | (n(f"{d}_packets").is_not_null() & n(f"{d}_bytes").is_not_null())
          for d in ("orig", "reply")),
        *(n(f"{k}_raw").is_null() | n(k).is_not_null() for k in [*_TAIL, "use", "ct_id"]),
    ]
    return pl.all_horizontal(checks)


def _reject(source: str, line: int, raw: str) -> Reject:
    field, value, expected = _diagnose(raw)
    return Reject(source, f"line {line}", field, value, expected, raw)


def _diagnose(raw: str) -> tuple[str, str, str]:
    """The first field that makes ``raw`` unusable, as (field, value, expected); the slow,
    per-line twin of :func:`_valid`, run on rejected lines only."""
    if raw.startswith("conntrack v"):
        return "line", repr(raw), "a conntrack entry, not a conntrack-tools message"
    head, _, rest = raw.partition(" src=")
    orig, _, reply = rest.partition(" src=")
    words = head.split()
    family = {"ipv4": 4, "ipv6": 6}.get(words[0], 0) if words else 0
    words = words[2:] if family else words
    if len(words) < 3 or not re.fullmatch(r"[a-z][a-z0-9]*", words[0]):
        return "protocol", repr(raw), "a conntrack entry: '[ipv4 2] tcp 6 <timeout> ... src=...'"
    if not words[1].isdigit() or int(words[1]) > 255:
        return "protocol", repr(words[1]), "an IP protocol number 0-255"
    if not words[2].isdigit():
        return "timeout", repr(words[2]), "seconds, a whole number"
    if not reply:
        return "src", "(missing)", "an original and a reply tuple, each starting with src="
    family = family or _family(orig.split(" ", 1)[0]) or 4
    for prefix, part in (("", orig), ("reply ", reply)):
        problem = _diagnose_tuple("src=" + part, int(words[1]), family, prefix)
        if problem:
            return problem
    return "line", repr(raw), "a conntrack entry in the format of conntrack -L or /proc"


_LIMITS = {"sport": ("a port 0-65535", 65535), "dport": ("a port 0-65535", 65535),
           "type": ("an ICMP type 0-255", 255), "code": ("an ICMP code 0-255", 255),
           "packets": ("a packet count", 2**62), "bytes": ("a byte count", 2**62),
           "mark": ("a mark 0-4294967295", 2**32 - 1), "zone": ("a zone 0-65535", 65535),
           "delta-time": ("seconds, a whole number", 2**62), "use": ("a use count", 2**31 - 1)}
_TAIL_WORDS = ("mark", "zone", "delta-time", "use")  # the entry's, not the reply tuple's


def _diagnose_tuple(part: str, proto: int, family: int,
                    prefix: str) -> tuple[str, str, str] | None:
    start = re.search(r"\[start=([^\]]*)\]", part)
    if start and _ctime(start.group(1)) is None:
        return "start", repr(start.group(1)), "a ctime date like 'Fri Nov 27 14:29:20 2026'"
    fields: dict[str, str] = {}
    for word in re.sub(r"\[start=[^\]]*\]", "", part).split():
        key, eq, value = word.partition("=")
        if not eq or (key in fields and key != "id"):
            continue
        fields[key] = value
        expected, hi = _LIMITS.get(key, ("", 0))
        name = key if key in _TAIL_WORDS or (key == "id" and "use" in fields) else prefix + key
        if key in ("src", "dst") and _family(value) != family:
            return name, repr(value), f"an IPv{family} address"
        if key == "id":
            expected, hi = ("a conntrack id", 2**32 - 1) if "use" in fields else (
                "an ICMP id 0-65535", 65535)
        if expected and (not value.isdigit() or int(value) > hi):
            return name, repr(value), expected
    for key in ("sport", "dport") if proto in _PORTS else ("type", "code", "id") if (
            proto in _ICMPS) else ():
        if key not in fields:
            return f"{prefix}{key}", "(missing)", _LIMITS.get(key, ("an ICMP id 0-65535",))[0]
    return None


def _family(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def _ctime(text: str) -> datetime | None:
    try:
        return datetime.strptime(" ".join(text.split()), _CTIME)
    except ValueError:
        return None


_KEY = ["zone", "proto", "orig_src_ip", "orig_dst_ip", "orig_src_port", "orig_dst_port",
        "icmp_type", "icmp_code", "icmp_id", "gre_src_key", "gre_dst_key"]
_DELTAS = {"orig_packets": "packets_fwd", "orig_bytes": "bytes_fwd",
           "reply_packets": "packets_rev", "reply_bytes": "bytes_rev"}
_SAME_START = timedelta(seconds=2)  # start = time - delta-time: 1 s steps plus clock skew


def segments(snapshots: Sequence[Snapshot], *, interval: int = 300,
             previous: Snapshot | None = None) -> pa.Table:
    """``SEGMENTS`` rows for the connections in ``snapshots`` (taken in any order), one per
    connection and epoch-aligned ``interval``; ``previous`` is the snapshot taken before them,
    which only serves as the baseline for increases and ``started``. ``conn_start`` is the
    ``[start=...]`` time, else the snapshot time minus ``delta-time``, else first sight.

    Each snapshot's ``time`` must be when it was listed (within a second: it dates
    ``delta-time``), and listings must not zero the counters (``conntrack -L -z``)."""
    if interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds (got {interval!r})")
    ordered = sorted(snapshots, key=lambda s: s.time)
    if not ordered:
        return SEGMENTS.empty_table()
    if previous is not None and previous.time > ordered[0].time:
        raise ValueError(f"previous snapshot {previous.source} ({previous.time}) must be taken "
                         f"before the first snapshot {ordered[0].source} ({ordered[0].time})")
    base = [] if previous is None else [previous]
    obs = pl.concat([_observations(s, k) for k, s in enumerate([*base, *ordered], -len(base))])
    windows = pl.DataFrame(
        {"snap": range(len(ordered)),
         "window": [datetime.fromtimestamp(s.time.timestamp() // interval * interval, UTC)
                    for s in ordered]},
        schema={"snap": pl.Int32, "window": pl.Datetime("us", "UTC")})
    rows = _rows(_link(obs), windows, previous is not None)
    return _segment_table(rows, interval)


def _observations(snapshot: Snapshot, k: int) -> pl.DataFrame:
    """One row per connection tuple in ``snapshot``, numbered ``k``; counters 0 if absent."""
    t = snapshot.time.astimezone(UTC)
    return pl.DataFrame(snapshot.entries).select(
        *_KEY, "reply_src_ip", "reply_src_port", "ct_id", "start", "line",
        *(pl.col(c).fill_null(0) for c in _DELTAS),
        derived=pl.lit(t) - pl.duration(seconds=pl.col("delta_time")),
        ended=(pl.col("proto") == 6) & pl.col("state").is_in(_ENDED).fill_null(False),
        snap=pl.lit(k, pl.Int32), t=pl.lit(t),
    ).unique(subset=_KEY, keep="first", maintain_order=True)  # a tuple is unique per table


def _link(obs: pl.DataFrame) -> pl.DataFrame:
    """Number connections (``conn``) and turn cumulative counters into increases.

    A row continues the row before it (same tuple, previous snapshot) unless conntrack id or
    start differ, a counter went down, or a TCP entry left TIME_WAIT/CLOSE: then the tuple
    was reused by a new connection."""
    df = obs.sort([*_KEY, "snap"], nulls_last=True)
    col = pl.col

    def prev(c: str) -> pl.Expr:
        return col(c).shift(1)

    def agree(c: str) -> pl.Expr:
        return col(c).is_null() | prev(c).is_null() | (col(c) == prev(c))
    continues = pl.all_horizontal(
        *(col(k).eq_missing(prev(k)) for k in _KEY), prev("snap") == col("snap") - 1,
        agree("ct_id"), agree("start"),
        ((col("derived") - prev("derived")).abs() <= _SAME_START).fill_null(True),
        *(col(c) >= prev(c) for c in _DELTAS), ~(prev("ended") & ~col("ended")))
    df = df.with_columns(cont=continues.fill_null(False))
    return df.with_columns(
        conn=(~col("cont")).cum_sum(),
        **{d: pl.when("cont").then(col(c) - prev(c)).otherwise(col(c)) for c, d in _DELTAS.items()})


def _rows(df: pl.DataFrame, windows: pl.DataFrame, has_previous: bool) -> pl.DataFrame:
    """Per-snapshot increases with ``started``/``completed`` (module docstring), plus a
    zero row where a connection was seen gone; snapshots before ``windows`` are dropped."""
    col, deltas = pl.col, list(_DELTAS.values())
    conns = _connections(df, windows.height - 1)
    gone = conns.filter((col("done") == col("last") + 1) & (col("done") >= 0)).select(
        "conn", snap=col("done").cast(pl.Int32), **{d: pl.lit(0, pl.Int64) for d in deltas})
    seen = df.filter(col("snap") >= 0).select("conn", "snap", *deltas)
    rows = pl.concat([seen, gone]).join(conns, on="conn").join(windows, on="snap")
    known = pl.coalesce("start", "derived")
    fresh = pl.lit(has_previous) | (col("first") > 0) | known.is_null() | (known >= col("window"))
    return rows.filter(
        col("done").is_null() | (col("snap") <= col("done"))
        | pl.any_horizontal(col(d) > 0 for d in deltas),
    ).with_columns(started=(col("snap") == col("first")) & fresh,
                   completed=(col("snap") == col("done")).fill_null(False))


def _connections(df: pl.DataFrame, last: int) -> pl.DataFrame:
    """One row per connection: its tuple, first and last snapshot, and ``done``, the
    snapshot where it completed (TIME_WAIT/CLOSE seen, or gone), numbered by first sight."""
    col = pl.col
    conns = df.group_by("conn").agg(
        col("proto", "orig_src_ip", "orig_src_port", "orig_dst_ip", "orig_dst_port",
            "reply_src_ip", "reply_src_port", "icmp_type", "icmp_code", "derived", "t",
            "line").first(),
        first=col("snap").min(), last=col("snap").max(),
        ended=col("snap").filter(col("ended")).min(), start=col("start").drop_nulls().first())
    return conns.sort("first", "line", "conn").with_row_index("conn_id", offset=1).with_columns(
        done=pl.min_horizontal("ended", pl.when(col("last") < last).then(col("last") + 1)))


def _segment_table(rows: pl.DataFrame, interval: int) -> pa.Table:
    """Sum rows per (connection, window) and map conntrack tuples onto ``SEGMENTS``: the
    reply tuple's source is the responder; the original destination is kept when DNAT
    changed it (a Service ClusterIP)."""
    col = pl.col
    firsts = ["conn_id", "proto", "orig_src_ip", "orig_src_port", "orig_dst_ip",
              "orig_dst_port", "reply_src_ip", "reply_src_port", "icmp_type", "icmp_code",
              "start", "derived", "t"]
    sums = rows.group_by("conn", "window").agg(
        *(col(d).sum() for d in _DELTAS.values()), col("started").any(),
        col("completed").any(), col(*firsts).first())
    dnat = (col("orig_dst_ip") != col("reply_src_ip")) | col("orig_dst_port").ne_missing(
        col("reply_src_port"))
    out = sums.sort("window", "conn_id").select(
        start_time=col("window"), end_time=col("window") + pl.duration(seconds=interval),
        conn_id=col("conn_id").cast(pl.Int64), conn_start=pl.coalesce("start", "derived", "t"),
        proto="proto", src_ip="orig_src_ip", dst_ip="reply_src_ip", src_port="orig_src_port",
        dst_port="reply_src_port", orig_dst_ip=pl.when(dnat).then(col("orig_dst_ip")),
        orig_dst_port=pl.when(dnat).then(col("orig_dst_port")), icmp_type="icmp_type",
        icmp_code="icmp_code", **{d: d for d in _DELTAS.values()}, started="started",
        completed="completed")
    return out.to_arrow().cast(SEGMENTS)
