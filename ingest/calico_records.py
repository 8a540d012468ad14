"""Calico Enterprise flow-log records (``reference/calico.md`` §1.2) as Arrow columns: the
shape Felix writes them in (:data:`RAW`), the rules a record must keep, and the conversion to
:data:`ingest.schema.FLOWS`.

Both work on whole tables, one pass per rule or column; work that depends only on a label, a
policy-hit string or a hit list is done once per distinct one.

>>> import pyarrow as pa
>>> raw = pa.Table.from_pylist([{"start_time": 16, "end_time": 1, "action": "allow",
...     "reporter": "src", "source_type": "net", "dest_type": "net"}], schema=RAW)
>>> problems(raw)
{0: ('end_time', '1', 'a Unix time not before start_time 16')}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.schema import FLOWS, conform
from policy.errors import HitSyntaxError
from policy.hits import ParsedHit, parse_hit

__all__ = ["RAW", "problems", "to_flows"]

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


@functools.lru_cache(maxsize=1 << 16)
def _hit(text: str) -> ParsedHit | str:
    """The parsed hit, or why it is not one (cached: a log repeats few distinct hits)."""
    if any(c < " " for c in text):
        return "it holds a control character"
    try:
        return parse_hit(text)
    except HitSyntaxError as err:
        return err.reason


@functools.lru_cache(maxsize=1 << 16)
def _label(text: str) -> tuple[str, str] | None:
    """``"app=web"`` → ``("app", "web")``; None unless ``key=value`` with a key."""
    key, eq, value = text.partition("=")
    return (key, value) if eq and key else None


# --- validation: one pass per rule over the table's columns -----------------------------------

_Found = tuple[np.ndarray, list[object], str, list[str]]  # rows, values, field, expected


def problems(raw: pa.Table) -> dict[int, tuple[str, str, str]]:
    """Row → ``(field, repr(value), expected)`` for each row of ``raw`` (:data:`RAW`) that
    breaks a rule, naming the first rule it breaks; rows not in it are good."""
    bad: dict[int, tuple[str, str, str]] = {}
    for found, values, field, expected in _rules(raw) if raw.num_rows else ():
        for r, v, e in zip(found.tolist(), values, expected, strict=True):
            bad.setdefault(r, (field, repr(v), e))
    return bad


def _rules(t: pa.Table) -> Iterator[_Found]:
    """Rows that break a rule, in rule order."""
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
    if not pc.any(mask).as_py():  # the usual case, in one call
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))


def _found(column: pa.ChunkedArray, mask: pa.ChunkedArray, field: str, expected: str) -> _Found:
    rows = _where(mask)
    values = column.take(rows).to_pylist() if len(rows) else []
    return rows, values, field, [expected] * len(rows)


def _nested(lists: pa.ChunkedArray, bad: Callable[[pa.ChunkedArray], pa.ChunkedArray],
            field: str, expected: Callable[[object], str]) -> _Found:
    """Rows of ``lists`` holding a value that ``bad`` marks, with the first such value."""
    flat = pc.list_flatten(lists)
    hits = _where(bad(flat))
    if not len(hits):
        return hits, [], field, []
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

def to_flows(raw: pa.Table, host: str | None) -> pa.Table:
    """:data:`RAW` rows that keep every rule → FLOWS rows (``collector`` "calico"; ``host``
    fills the records that have none)."""
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
