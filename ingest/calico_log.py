"""Reading Calico Enterprise ``flows.log`` (JSON lines, ``reference/calico.md`` §1.1-§1.2) into
batches of :data:`ingest.schema.FLOWS` rows.

A block of lines is parsed at once by Arrow's JSON reader with an explicit schema; only a block
that fails is halved until the bad lines are isolated, and those are parsed one by one to say
what is wrong with them. Validation and conversion are columnar; work that depends only on a
label or a policy-hit string is done once per distinct string.

>>> import io
>>> log = io.BytesIO(b'{"start_time":1,"end_time":16,"action":"allow","reporter":"src",'
...                  b'"source_type":"net","dest_type":"net"}\\n{"start_ti')
>>> [(b.table.num_rows, b.lines, b.end_offset) for b in read_calico_log(log, name="flows.log")]
[(1, 1, 103)]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ingest.schema import FLOWS, Reject, conform, empty
from policy.errors import HitSyntaxError
from policy.hits import ParsedHit, parse_hit

__all__ = ["LogBatch", "read_calico_log"]

_READ_SIZE = 1 << 20  # bytes per read(); a batch is cut at its batch_lines-th newline
_BLOCK = 16 << 20  # Arrow JSON block size; a longer line is parsed on its own
_LEAF = 16  # a failing range this short is checked line by line
_SPAN = 8192  # lines per block: its buffers stay small enough to be reused, not refaulted
_WHITESPACE = (9, 13, 32)  # what JSON skips besides "\n"
_SEP = "\x1f"  # joins a hit list into one string; hits with control characters are rejected
_TS = pa.timestamp("s", tz="UTC")
_STRINGS = pa.list_(pa.string())
_POLICY_LISTS = ("all_policies", "enforced_policies", "pending_policies", "transit_policies")
_PORTS = ("source_port", "dest_port", "dest_service_port_num")
_ENUMS = (
    ("action", ("allow", "deny")),
    ("reporter", ("src", "dst", "fwd", "src,fwd", "dst,fwd")),  # §1.2, §1.6
    ("source_type", ("wep", "hep", "ns", "net")),  # §1.3
    ("dest_type", ("wep", "hep", "ns", "net")),
)


def _json_type(typ: pa.DataType) -> pa.DataType:
    """How Calico writes a FLOWS column: times and ports as plain integers, labels as
    ``{"labels": ["k=v", ...]}``; dictionary columns are plain strings."""
    if pa.types.is_timestamp(typ) or pa.types.is_integer(typ):
        return pa.int64()
    if pa.types.is_dictionary(typ):
        return pa.string()
    if pa.types.is_map(typ):
        return pa.struct([pa.field("labels", _STRINGS)])
    if pa.types.is_list(typ) and pa.types.is_integer(typ.value_type):
        return pa.list_(pa.int64())
    return typ


RAW = pa.schema(
    [pa.field(f.name, _json_type(f.type)) for f in FLOWS
     if f.name not in (*_POLICY_LISTS, "collector")]
    + [pa.field("policies", pa.struct([pa.field(n, _STRINGS) for n in _POLICY_LISTS]))])
_COUNTERS = tuple(f.name for f in RAW if f.type == pa.int64()
                  and f.name not in (*_PORTS, "start_time", "end_time"))
_PARSE = pj.ParseOptions(explicit_schema=RAW, unexpected_field_behavior="ignore")


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One run of lines: the good records, the rejected lines, and where the run ended."""

    table: pa.Table  # ingest.schema.FLOWS, collector "calico"
    rejects: list[Reject]
    lines: int  # lines consumed in this batch (good, rejected and blank)
    end_offset: int  # byte offset just past the last complete line consumed


def read_calico_log(source: BinaryIO, *, name: str, start_offset: int = 0,
                    host: str | None = None, batch_lines: int = 65536) -> Iterator[LogBatch]:
    """Read ``source`` from byte ``start_offset``, yielding a :class:`LogBatch` per
    ``batch_lines`` complete lines.

    * Only lines ending in ``"\\n"`` are consumed: a partial last line (a writer mid-line) is
      left for the next run, so ``end_offset`` is always a line start to resume from. A seekable
      ``source`` is seeked to ``start_offset``; an unseekable one must already be there.
    * Memory holds one batch (its bytes and its table) whatever the size of the file.
    * Blank lines are consumed silently. Line numbers in rejects count ``start_offset``'s line
      as line 1; the byte offset given with them is the line's offset in the file.
    * A bad line becomes a :class:`Reject` (``flows.log: line 12 (byte 3456): action: 'alow'
      (expected allow or deny)``) with the line in ``raw``; the other lines still land.
    * Columns are Calico's keys (§1.2). ``policies`` gives ``enforced_policies``,
      ``pending_policies``, ``transit_policies`` and ``all_policies``. A record of an older
      Felix with only ``all_policies`` gets as ``enforced_policies`` its non-staged hits,
      renumbered 0, 1, ... in index order (what Felix does when it writes enforced_policies),
      and as ``pending_policies`` ``all_policies`` as given: the nearest trace the record holds,
      though Felix's own pending trace would end at a staged deny.
    * ``{"labels": ["k=v", ...]}`` becomes a map (split at the first ``=``); ``null`` labels
      stay null, ``{"labels": null}`` is an endpoint without labels (an empty map).
    * ``host`` comes from the record if it has one (records exported from Elasticsearch), else
      from the ``host`` argument. ``@timestamp``, ``cluster``, ``generated_time``, ``id`` and
      keys that newer Calico versions add are ignored.
    """
    if batch_lines < 1:
        raise ValueError(f"batch_lines must be 1 or more (got {batch_lines!r})")
    if source.seekable():
        source.seek(start_offset)
    offset, line_no, done = start_offset, 0, 0
    tables: list[pa.Table] = []
    rejects: list[Reject] = []
    for data, ends, full in _line_runs(source, batch_lines):
        block = _Block(name, data, np.asarray(ends, dtype=np.int64), offset, line_no)
        table, bad = _read_block(block, host)
        tables.append(table)
        rejects += bad
        offset, line_no = offset + len(data), line_no + len(ends)
        if full:
            yield LogBatch(pa.concat_tables(tables), rejects, line_no - done, offset)
            tables, rejects, done = [], [], line_no


def _line_runs(source: BinaryIO, batch_lines: int) -> Iterator[tuple[bytes, list[int], bool]]:
    """Runs of at most ``_SPAN`` complete lines, with the position of each line's ``"\\n"``
    and whether the run ends a batch; bytes after the last ``"\\n"`` are never yielded."""
    parts: list[bytes] = []  # read but not yet yielded, joined once per run
    size, in_batch = 0, 0
    ends: list[int] = []
    while chunk := source.read(_READ_SIZE):
        pos = -1
        while (pos := chunk.find(b"\n", pos + 1)) != -1:
            ends.append(size + pos)
            if len(ends) == min(_SPAN, batch_lines - in_batch):
                in_batch = (in_batch + len(ends)) % batch_lines
                yield b"".join([*parts, chunk[:pos + 1]]), ends, in_batch == 0
                chunk, parts, size, ends, pos = chunk[pos + 1:], [], 0, [], -1
        parts.append(chunk)
        size += len(chunk)
    if ends:
        yield b"".join(parts)[:ends[-1] + 1], ends, True


@dataclass(frozen=True, slots=True)
class _Block:
    """One run of complete lines and where it sits in the file."""

    name: str
    data: bytes
    ends: np.ndarray  # position of each line's "\n" in data
    offset: int  # file offset of data[0]
    first_line: int  # lines consumed before this block in this read

    def start(self, i: int) -> int:
        return int(self.ends[i - 1]) + 1 if i else 0

    def line(self, i: int) -> bytes:
        return self.data[self.start(i):int(self.ends[i])]

    def span(self, i: int, j: int) -> pa.Buffer:
        start = self.start(i)
        return pa.py_buffer(self.data).slice(start, int(self.ends[j - 1]) + 1 - start)

    def reject(self, i: int, field: str, value: str, expected: str) -> Reject:
        raw = self.line(i).rstrip(b"\r").decode("utf-8", errors="replace")
        where = f"line {self.first_line + i + 1} (byte {self.offset + self.start(i)})"
        return Reject(self.name, where, field, value, expected, raw)


@functools.lru_cache(maxsize=1 << 16)
def _hit(text: str) -> ParsedHit | str:
    """The parsed hit, or why it is not one (cached: a log repeats few distinct hits)."""
    if any(c < " " for c in text):
        return "it holds a control character"
    try:
        return parse_hit(text)
    except HitSyntaxError as err:
        return str(err).removeprefix(f"invalid policy hit {text!r}: ").split("; expected")[0]


@functools.lru_cache(maxsize=1 << 16)
def _label(text: str) -> tuple[str, str] | None:
    """``"app=web"`` → ``("app", "web")``; None unless ``key=value`` with a key."""
    key, eq, value = text.partition("=")
    return (key, value) if eq and key else None


def _read_block(block: _Block, host: str | None) -> tuple[pa.Table, list[Reject]]:
    raw, rows, rejects = _parse(block)
    bad: dict[int, tuple[str, str, str]] = {}
    for found, values, field, expected in _problems(raw) if raw.num_rows else ():
        for r, v, e in zip(found.tolist(), values, expected, strict=True):
            bad.setdefault(r, (field, repr(v), e))
    rejects += [block.reject(int(rows[r]), *why) for r, why in bad.items()]
    rejects.sort(key=lambda r: int(r.position.split()[1]))
    if bad:
        keep = np.ones(raw.num_rows, dtype=bool)
        keep[list(bad)] = False
        raw = raw.filter(pa.array(keep))
    return (_to_flows(raw, host) if raw.num_rows else empty(FLOWS)), rejects


# --- parsing: whole blocks with Arrow, bad lines isolated by halving --------------------------

class _Parsed:
    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.rows: list[np.ndarray] = []  # the line of each row of each table
        self.rejects: list[Reject] = []

    def add(self, table: pa.Table, lines: np.ndarray | list[int]) -> None:
        self.tables.append(table)
        self.rows.append(np.asarray(lines, dtype=np.int64))


def _parse(block: _Block) -> tuple[pa.Table, np.ndarray, list[Reject]]:
    """Rows of the block's lines, the line of each row, and the lines Arrow could not read."""
    blank = _blank_lines(block)
    # Arrow does not check UTF-8: a line with invalid UTF-8 must never reach it.
    unsafe = np.zeros(len(blank), dtype=bool)
    if not block.data.isascii():
        unsafe = np.array([not _is_utf8(block.line(i)) for i in range(len(blank))], dtype=bool)
    out = _Parsed()
    _parse_range(block, 0, len(blank), blank, unsafe, out)
    if not out.tables:
        return RAW.empty_table(), np.zeros(0, dtype=np.int64), out.rejects
    return pa.concat_tables(out.tables), np.concatenate(out.rows), out.rejects


def _blank_lines(block: _Block) -> np.ndarray:
    starts = np.concatenate(([0], block.ends[:-1] + 1))
    empty_line = block.ends == starts
    first = np.frombuffer(block.data, dtype=np.uint8)[starts]
    blank: np.ndarray = empty_line | np.isin(first, _WHITESPACE)
    for i in np.flatnonzero(blank & ~empty_line):  # starts with whitespace: look closer
        blank[i] = not block.line(int(i)).strip(b" \t\r")
    return blank


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_range(block: _Block, i: int, j: int, blank: np.ndarray, unsafe: np.ndarray,
                 out: _Parsed) -> None:
    """Parse lines ``[i, j)`` at once if they give one row per non-blank line, else halve."""
    want = np.flatnonzero(~blank[i:j]) + i
    if not len(want):
        return
    if j - i <= _LEAF:
        _parse_lines(block, want.tolist(), out)
        return
    if not unsafe[i:j].any():
        table = _try_read(block.span(i, j))
        # One row per line, or a line held two objects and must be rejected.
        if isinstance(table, pa.Table) and table.num_rows == len(want):
            out.add(table, want)
            return
    mid = (i + j) // 2
    _parse_range(block, i, mid, blank, unsafe, out)
    _parse_range(block, mid, j, blank, unsafe, out)


def _parse_lines(block: _Block, lines: list[int], out: _Parsed) -> None:
    """Check each line in Python, then parse the ones that look right together."""
    good = []
    for i in lines:
        why = _diagnose(block.line(i))
        if why:
            out.rejects.append(block.reject(i, *why))
        else:
            good.append(i)
    if not good:
        return
    table = _try_read(pa.py_buffer(b"".join(block.line(i) + b"\n" for i in good)))
    if isinstance(table, pa.Table) and table.num_rows == len(good):
        out.add(table, good)
        return
    for i in good:  # Arrow refuses what Python accepted: let Arrow say why, line by line
        table = _try_read(pa.py_buffer(block.line(i) + b"\n"))
        if isinstance(table, pa.Table) and table.num_rows == 1:
            out.add(table, [i])
        else:
            out.rejects.append(block.reject(i, "json", repr(str(table)), "a flow-log record"))


def _try_read(buf: pa.Buffer) -> pa.Table | str:
    """The rows Arrow reads from ``buf``, or its error message."""
    options = pj.ReadOptions(use_threads=False, block_size=max(_BLOCK, buf.size + 1))
    try:
        return pj.read_json(pa.BufferReader(buf), read_options=options, parse_options=_PARSE)
    except pa.ArrowException as err:
        return str(err)


def _diagnose(line: bytes) -> tuple[str, str, str] | None:
    """(field, value, expected) for what makes ``line`` unreadable, or None if nothing does."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError as err:
        bad = line[max(0, err.start - 20):err.end + 20].decode("utf-8", errors="replace")
        return "json", repr(bad), "UTF-8 text"
    except json.JSONDecodeError as err:
        near = err.doc[max(0, err.pos - 20):err.pos + 20]
        return "json", repr(near), f"one JSON object per line ({err.msg}: column {err.colno})"
    if not isinstance(record, dict):
        return "json", repr(record), "one JSON object per line"
    for field in RAW:
        value = record.get(field.name)
        if not _fits(value, field.type):
            return field.name, repr(value), _describe(field.name, field.type)
    return None


def _fits(value: object, typ: pa.DataType) -> bool:
    """Whether Arrow's reader takes ``value`` as ``typ`` (the Python mirror of RAW)."""
    if value is None:
        return True
    if pa.types.is_integer(typ):
        return type(value) is int and -(1 << 63) <= value < (1 << 63)
    if pa.types.is_string(typ):
        return isinstance(value, str)
    if pa.types.is_list(typ):
        return isinstance(value, list) and all(_fits(v, typ.value_type) for v in value)
    if pa.types.is_struct(typ):
        return isinstance(value, dict) and all(_fits(value.get(f.name), f.type) for f in typ)
    return False


def _describe(name: str, typ: pa.DataType) -> str:
    if name in ("start_time", "end_time"):
        return "an integer Unix time in seconds"
    if name in ("source_labels", "dest_labels", "policies"):
        return ('{"labels": ["key=value", ...]} or null' if name != "policies"
                else "an object of policy-hit lists")
    return {pa.int64(): "an integer or null", pa.string(): "a string or null",
            _STRINGS: "a list of strings or null"}.get(typ, "a list of integers or null")


# --- validation: one pass per rule over the block's columns -----------------------------------

_Found = tuple[np.ndarray, list[object], str, list[str]]  # rows, values, field, expected


def _problems(t: pa.Table) -> Iterator[_Found]:
    """Rows that break a rule, in rule order (a row is reported for the first it breaks)."""
    for name in ("start_time", "end_time"):
        yield _found(t[name], pc.is_null(t[name]), name, "an integer Unix time in seconds")
    rows = _where(pc.less(t["end_time"], t["start_time"]))
    yield (rows, t["end_time"].take(rows).to_pylist(), "end_time",
           [f"a Unix time not before start_time {s}" for s in t["start_time"].take(rows)])
    for name, allowed in _ENUMS:
        ok = pc.is_in(t[name], value_set=pa.array(allowed))
        text = " or ".join(allowed) if len(allowed) == 2 else f"one of {', '.join(allowed)}"
        yield _found(t[name], pc.invert(ok), name, text)
    for name in _PORTS:
        yield _found(t[name], _off_port(t[name]), name, "a port 0-65535 or null")
    yield _nested(t["nat_outgoing_ports"], _off_port, "nat_outgoing_ports",
                  lambda _: "ports 0-65535")
    for name in _COUNTERS:
        yield _found(t[name], pc.less(t[name], 0), name, "a count of 0 or more")
    for name in ("source_labels", "dest_labels"):
        yield _nested(pc.struct_field(t[name], "labels"),
                      lambda v: _marks(v, lambda s: _label(s) is None), name,
                      lambda _: "labels as key=value")
    for name in _POLICY_LISTS:
        yield _nested(pc.struct_field(t["policies"], name),
                      lambda v: _marks(v, lambda s: isinstance(_hit(s), str)),
                      f"policies.{name}",
                      lambda v: "a policy hit index|tier|name|action|rule "
                                f"({_hit(v) if isinstance(v, str) else 'not a string'})")


def _where(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))


def _found(column: pa.ChunkedArray, mask: pa.ChunkedArray, field: str, expected: str) -> _Found:
    rows = _where(mask)
    return rows, column.take(rows).to_pylist(), field, [expected] * len(rows)


def _nested(lists: pa.ChunkedArray, bad: Callable[[pa.ChunkedArray], pa.ChunkedArray],
            field: str, expected: Callable[[object], str]) -> _Found:
    """Rows of ``lists`` holding a value that ``bad`` marks, with the first such value."""
    flat = pc.list_flatten(lists)
    hits = _where(bad(flat))
    rows, first = np.unique(pc.list_parent_indices(lists).to_numpy()[hits], return_index=True)
    values = flat.take(hits[first]).to_pylist()
    return rows, values, field, [expected(v) for v in values]


def _off_port(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.or_(pc.less(values, 0), pc.greater(values, 65535))


def _marks(values: pa.ChunkedArray, is_bad: Callable[[str], bool]) -> pa.ChunkedArray:
    """True for each null value and each value that ``is_bad``, judged once per distinct one."""
    bad = [v for v in pc.unique(values).to_pylist() if v is None or is_bad(v)]
    return pc.is_in(values, value_set=pa.array(bad, pa.string()))


# --- conversion to FLOWS ----------------------------------------------------------------------

def _to_flows(raw: pa.Table, host: str | None) -> pa.Table:
    cols: dict[str, pa.ChunkedArray | pa.Array] = {
        f.name: raw[f.name] for f in RAW if f.name != "policies"}
    cols["start_time"] = raw["start_time"].cast(_TS)
    cols["end_time"] = raw["end_time"].cast(_TS)
    for name in ("source_labels", "dest_labels"):
        cols[name] = _label_map(raw[name])
    cols.update(_policies(raw["policies"]))
    if host is not None:
        cols["host"] = pc.fill_null(raw["host"], host)
    cols["collector"] = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(raw.num_rows, dtype=np.int32)), pa.array(["calico"]))
    return conform(pa.table(cols))


def _label_map(column: pa.ChunkedArray) -> pa.MapArray:
    """``{"labels": ["k=v", ...]}`` → map, each distinct label split once."""
    lists = pc.struct_field(column, "labels")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(lists)
    uniq = pc.unique(flat)
    pairs = [_label(v) or ("", "") for v in uniq.to_pylist()]
    at = pc.index_in(flat, value_set=uniq)
    keys = pa.array([k for k, _ in pairs], pa.string()).take(at)
    items = pa.array([v for _, v in pairs], pa.string()).take(at)
    return pa.MapArray.from_arrays(pa.array(offsets), _one(keys), _one(items),
                                   mask=pc.is_null(column).combine_chunks())


def _one(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _policies(column: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    lists = {name: pc.struct_field(column, name) for name in _POLICY_LISTS}
    alls = lists["all_policies"]
    if pc.any(pc.and_(pc.is_null(lists["enforced_policies"]), pc.is_valid(alls))).as_py():
        lists["enforced_policies"] = pc.coalesce(lists["enforced_policies"],
                                                 _enforced_from_all(alls))
    lists["pending_policies"] = pc.coalesce(lists["pending_policies"], alls)
    return lists


def _enforced_from_all(alls: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row, the non-staged hits of ``all_policies`` renumbered; once per distinct list."""
    joined = pc.binary_join(alls, _SEP)
    uniq = pc.unique(joined)
    derived = [None if u is None else _renumber(u.split(_SEP) if u else [])
               for u in uniq.to_pylist()]
    return pa.array(derived, _STRINGS).take(pc.index_in(joined, value_set=uniq))


def _renumber(hits: list[str]) -> list[str]:
    """``["0|t|t.a|pass|0", "1|t|t.staged:b|deny|-1", "2|u|u.c|allow|0"]`` →
    ``["0|t|t.a|pass|0", "1|u|u.c|allow|0"]``: staged hits dropped, the rest renumbered."""
    kept = []
    for k, text in enumerate(hits):
        parsed = _hit(text)
        if isinstance(parsed, ParsedHit) and not parsed.staged:
            kept.append((parsed.index, k, text))
    return [f"{n}|{text.split('|', 1)[1]}" for n, (_, _, text) in enumerate(sorted(kept))]
