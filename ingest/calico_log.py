"""Reading Calico Enterprise ``flows.log`` (JSON lines, ``reference/calico.md`` §1.1-§1.2) into
batches of :data:`ingest.schema.FLOWS` rows.

The file is cut into blocks of complete lines. A block is parsed at once by Arrow's JSON reader
with an explicit schema (:data:`RAW`); only a block that fails is halved until the bad lines are
isolated, and those are parsed one by one to say what is wrong with them. The records are then
checked and converted by :mod:`ingest.calico_records`. Blocks are independent, so they are read
on as many threads as Arrow's CPU pool has (``pyarrow.cpu_count()``), up to a batch ahead of the
consumer: Arrow's parser and compute functions run without the GIL.

>>> import io
>>> log = io.BytesIO(b'{"start_time":1,"end_time":16,"action":"allow","reporter":"src",'
...                  b'"source_type":"net","dest_type":"net"}\\n{"start_ti')
>>> [(b.table.num_rows, b.lines, b.end_offset) for b in read_calico_log(log, name="flows.log")]
[(1, 1, 103)]
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from ingest.calico_records import RAW, problems, to_flows
from ingest.schema import FLOWS, Reject, empty

__all__ = ["RAW", "LogBatch", "read_calico_log"]

_READ_SIZE = 1 << 20  # bytes per read(); a batch is cut at its batch_lines-th newline
_BLOCK = 16 << 20  # Arrow JSON block size; a longer line is parsed on its own
_LEAF = 16  # a failing range this short is checked line by line
_SPAN = 8192  # lines per block: its buffers stay small enough to be reused, not refaulted
_NEWLINE, _OBJECT = 10, 123  # "\n", "{"
_WHITESPACE = (9, 13, 32)  # what JSON skips besides "\n"
_PARSE = pj.ParseOptions(explicit_schema=RAW, unexpected_field_behavior="ignore")
_Read = tuple[pa.Table, list[Reject]]  # a block's good rows (FLOWS) and its rejected lines
_End = tuple[bool, int, int]  # the block ends a batch; lines and bytes consumed after it


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
    * Memory holds one batch whatever the size of the file, or two with more than one thread:
      the next batch is read while the consumer handles the one handed out.
      ``pyarrow.set_cpu_count(1)`` keeps the reading on the calling thread.
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
    blocks = _blocks(source, name, start_offset, batch_lines)
    done = 0
    tables: list[pa.Table] = []
    rejects: list[Reject] = []
    read = functools.partial(_read_block, host=host)
    ahead = -(-batch_lines // _SPAN)  # a batch's blocks: the next batch is read meanwhile
    for (last, lines, end), (table, bad) in _in_order(read, blocks, pa.cpu_count(), ahead):
        tables.append(table)
        rejects += bad
        if last:
            yield LogBatch(pa.concat_tables(tables), rejects, lines - done, end)
            tables, rejects, done = [], [], lines


@dataclass(frozen=True, slots=True)
class _Block:
    """One run of complete lines and where it sits in the file."""

    name: str
    data: bytes
    ends: np.ndarray  # position of each line's "\n" in data
    offset: int  # file offset of data[0]
    first_line: int  # lines consumed before this block in this read
    last: bool  # the block ends a batch

    def end(self) -> _End:
        return self.last, self.first_line + len(self.ends), self.offset + len(self.data)

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


def _blocks(source: BinaryIO, name: str, offset: int, batch_lines: int) -> Iterator[_Block]:
    line_no = 0
    for data, ends, last in _line_runs(source, batch_lines):
        yield _Block(name, data, ends, offset, line_no, last)
        offset, line_no = offset + len(data), line_no + len(ends)


def _line_runs(source: BinaryIO,
               batch_lines: int) -> Iterator[tuple[bytes, np.ndarray, bool]]:
    """Runs of at most ``_SPAN`` complete lines, with the position of each line's ``"\\n"``
    and whether the run ends a batch; bytes after the last ``"\\n"`` are never yielded."""
    parts: list[memoryview] = []  # read but not yet yielded, joined once per run
    found: list[np.ndarray] = []  # the "\n" in parts, counted from the start of parts[0]
    size, count, in_batch = 0, 0, 0
    while chunk := source.read(_READ_SIZE):
        found.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == _NEWLINE) + size)
        parts.append(memoryview(chunk))
        size, count = size + len(chunk), count + len(found[-1])
        # parts held fewer than `want` lines before this chunk: the cut falls in parts[-1]
        while count >= (want := min(_SPAN, batch_lines - in_batch)):
            ends = np.concatenate(found)
            cut = int(ends[want - 1]) + 1
            tail = cut - (size - len(parts[-1]))
            in_batch = (in_batch + want) % batch_lines
            yield b"".join([*parts[:-1], parts[-1][:tail]]), ends[:want], in_batch == 0
            parts, found = [parts[-1][tail:]], [ends[want:] - cut]
            size, count = size - cut, count - want
    if count:
        ends = np.concatenate(found)
        yield b"".join(parts)[:int(ends[-1]) + 1], ends, True


def _in_order(read: Callable[[_Block], _Read], blocks: Iterator[_Block], workers: int,
              ahead: int) -> Iterator[tuple[_End, _Read]]:
    """What ``read`` gives for each block, in order, with where the block ends. With
    ``workers`` > 1 the blocks are read on that many threads, up to ``ahead`` blocks ahead of
    the one handed out, so that the threads go on while the consumer handles a batch."""
    if workers < 2:
        for block in blocks:
            yield block.end(), read(block)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="calico-log")
    pending: deque[tuple[_End, Future[_Read]]] = deque()  # a done block's bytes are freed
    try:
        for block in blocks:
            pending.append((block.end(), pool.submit(read, block)))
            if len(pending) > max(ahead, workers):
                end, result = pending.popleft()
                yield end, result.result()
        while pending:
            end, result = pending.popleft()
            yield end, result.result()
    finally:  # also when the consumer stops early: drop what was not started
        pool.shutdown(cancel_futures=True)


def _read_block(block: _Block, host: str | None) -> _Read:
    raw, rows, rejects = _parse(block)
    bad = problems(raw)
    rejects += [block.reject(int(rows[r]), *why) for r, why in bad.items()]
    rejects.sort(key=lambda r: int(r.position.split()[1]))
    if bad:
        keep = np.ones(raw.num_rows, dtype=bool)
        keep[list(bad)] = False
        raw = raw.filter(pa.array(keep))
    return (to_flows(raw, host) if raw.num_rows else empty(FLOWS)), rejects


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
    first = _first_bytes(block)
    blank = first < 0
    # Arrow must never see a line that is not an object: it reads "null" after an object as a
    # row of nulls, and pyarrow 26 crashes on a buffer that starts with "null".
    unsafe = ~blank & (first != _OBJECT)
    if not block.data.isascii():  # Arrow does not check UTF-8
        unsafe |= np.array([not _is_utf8(block.line(i)) for i in range(len(first))], dtype=bool)
    out = _Parsed()
    _parse_range(block, 0, len(first), blank, unsafe, out)
    if not out.tables:
        return RAW.empty_table(), np.zeros(0, dtype=np.int64), out.rejects
    return pa.concat_tables(out.tables), np.concatenate(out.rows), out.rejects


def _first_bytes(block: _Block) -> np.ndarray:
    """The first byte of each line that JSON does not skip as whitespace; -1 if none."""
    starts = np.concatenate(([0], block.ends[:-1] + 1))
    first = np.frombuffer(block.data, dtype=np.uint8)[starts].astype(np.int16)
    first[block.ends == starts] = -1  # an empty line: its first byte is its "\n"
    for i in np.flatnonzero(np.isin(first, _WHITESPACE)):  # starts with whitespace: look closer
        rest = block.line(int(i)).lstrip(b" \t\r")
        first[i] = rest[0] if rest else -1
    return first


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
            pa.list_(pa.string()): "a list of strings or null",
            }.get(typ, "a list of integers or null")


