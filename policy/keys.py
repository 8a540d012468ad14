"""Exact row keys for Arrow tables: which rows are equal on a set of columns, columnar.

Every column becomes integer codes per row, exact and stable across chunks (one value → one
code, ``null`` included): dictionary columns map their dictionary once and gather indices,
integers are their own code, other scalars are dictionary-encoded. Map and list columns
(labels, domains) keep exact per-entry codes plus a 64-bit fingerprint per row.

:func:`factorize` hashes the codes into one fingerprint per row, groups rows by it (one hash
pass), then *verifies* every row against its group's representative on the exact codes and
entries. A fingerprint collision, or maps whose entries come in a different order, can only
cost the slower exact path; it can never merge rows that differ.

Data read from Parquet with ``read_dictionary`` on string leaves (as the store reads it) needs
no string hashing at all; plain strings are dictionary-encoded here (the dominant cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Encoded", "encode", "factorize", "same_rows"]

_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL_ROW = np.uint64(0xD6E8FEB86659FD93)


def mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, elementwise."""
    x = x ^ (x >> np.uint64(33))
    x = x * _M1
    x = x ^ (x >> np.uint64(33))
    x = x * _M2
    return x ^ (x >> np.uint64(33))  # type: ignore[no-any-return]


class _Coder:
    """Value → code for one column, shared by all its chunks."""

    def __init__(self) -> None:
        self.codes: dict[object, int] = {None: 0}

    def of_dictionary(self, dictionary: pa.Array) -> np.ndarray:
        values = dictionary.to_pylist()
        return np.fromiter((self.codes.setdefault(v, len(self.codes)) for v in values),
                           dtype=np.uint64, count=len(values))


def _flat_codes(chunk: pa.Array, coder: _Coder) -> np.ndarray:
    """Exact codes of a scalar column chunk: one code per distinct value, null is code 0."""
    if chunk.null_count == len(chunk):
        return np.zeros(len(chunk), dtype=np.uint64)
    if not pa.types.is_dictionary(chunk.type):
        chunk = pc.dictionary_encode(chunk)
    lut = coder.of_dictionary(chunk.dictionary)
    if len(lut) == 1 and chunk.null_count == 0:
        return np.full(len(chunk), lut[0], dtype=np.uint64)
    if chunk.null_count:
        codes = lut[pc.fill_null(chunk.indices, 0).to_numpy(zero_copy_only=False)]
        codes[~chunk.is_valid().to_numpy(zero_copy_only=False)] = 0
        return codes  # type: ignore[no-any-return]
    return lut[chunk.indices.to_numpy(zero_copy_only=False)]  # type: ignore[no-any-return]


@dataclass
class Encoded:
    """One column's exact codes: ``codes`` per row; for nested columns also the per-entry
    codes, row offsets into them, and row validity (``codes`` is then a fingerprint)."""

    codes: np.ndarray
    entries: np.ndarray | None = None
    offsets: np.ndarray | None = None
    valid: np.ndarray | None = None
    cardinality: int = 0  # flat columns: codes are dense in [0, cardinality)


def _nested_chunk(chunk: pa.Array, coders: tuple[_Coder, _Coder]) -> Encoded:
    # Offsets of a (sliced) list/map array point into its whole child array.
    absolute = chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    start, stop = int(absolute[0]), int(absolute[-1])
    offsets = absolute - start
    lengths = np.diff(offsets)

    def child(arr: pa.Array) -> np.ndarray:
        return _flat_codes(arr.slice(start, stop - start), coders[1])

    if pa.types.is_map(chunk.type):
        keys = _flat_codes(chunk.keys.slice(start, stop - start), coders[0])
        entries = (keys << np.uint64(32)) | child(chunk.items)
    else:
        entries = child(chunk.values)
    valid = chunk.is_valid().to_numpy(zero_copy_only=False)
    codes = np.zeros(len(chunk), dtype=np.uint64)
    nonempty = lengths > 0
    if len(entries):
        codes[nonempty] = np.add.reduceat(mix(entries + _GOLDEN), offsets[:-1][nonempty])
    codes[~valid] = _NULL_ROW
    return Encoded(codes, entries, offsets, valid)


def encode(column: pa.ChunkedArray | pa.Array) -> Encoded:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    t = column.type
    if pa.types.is_map(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        coders = (_Coder(), _Coder())
        parts = [_nested_chunk(c, coders) for c in chunks] or [_nested_chunk(
            pa.array([], type=t), coders)]
        entries = [p.entries for p in parts if p.entries is not None]
        offsets = [p.offsets for p in parts if p.offsets is not None]
        shifts = np.cumsum([0] + [len(e) for e in entries[:-1]])
        return Encoded(
            codes=np.concatenate([p.codes for p in parts]),
            entries=np.concatenate(entries),
            offsets=np.concatenate([offsets[0][:1]] + [
                o[1:] + s for o, s in zip(offsets, shifts, strict=True)]),
            valid=np.concatenate([p.valid for p in parts if p.valid is not None]),
        )
    coder = _Coder()
    codes = [_flat_codes(c, coder) for c in chunks]
    return Encoded(np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint64),
                   cardinality=len(coder.codes))


def same_rows(enc: Encoded, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: is row ``a[i]`` exactly equal to row ``b[i]`` in this column?"""
    same = enc.codes[a] == enc.codes[b]
    if enc.entries is None:
        return same  # type: ignore[no-any-return]
    assert enc.offsets is not None and enc.valid is not None
    starts_a, starts_b = enc.offsets[a], enc.offsets[b]
    lens = enc.offsets[a + 1] - starts_a
    same &= (enc.valid[a] == enc.valid[b]) & (lens == enc.offsets[b + 1] - starts_b)
    if same.all() and len(a) == len(enc.codes) and np.array_equal(a, np.arange(len(a))):
        # Every row against its representative (factorize's check): side a is the entries
        # array itself, in order; only side b needs a gather.
        nonempty = np.flatnonzero(lens)
        if len(nonempty):
            shift = np.repeat(starts_b - starts_a, lens)
            equal = enc.entries == enc.entries[np.arange(len(shift)) + shift]
            same[nonempty] &= np.logical_and.reduceat(equal, starts_a[nonempty])
        return same  # type: ignore[no-any-return]
    lens = np.where(same, lens, 0)
    nonempty = np.flatnonzero(lens)
    if len(nonempty):
        # Entry j of row i sits at starts[i] + j on either side: gather both runs once and
        # AND the comparisons per row.
        run_starts = np.cumsum(lens) - lens
        shift = np.repeat(starts_a - run_starts, lens)
        pos = np.arange(int(lens.sum()), dtype=np.int64)
        equal = enc.entries[pos + shift] == enc.entries[
            pos + np.repeat(starts_b - run_starts, lens)]
        same[nonempty] &= np.logical_and.reduceat(equal, run_starts[nonempty])
    return same  # type: ignore[no-any-return]


def _group(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group ids per row and the first row of each group, by one hash aggregation."""
    groups = pl.DataFrame({"h": h}).with_row_index("row").group_by("h").agg(pl.col("row"))
    rows = groups["row"]
    gid = np.empty(len(h), dtype=np.int64)
    gid[rows.explode().to_numpy()] = np.repeat(np.arange(len(groups)),
                                               rows.list.len().to_numpy())
    return gid, rows.list.first().to_numpy().astype(np.int64)


def _canonical(enc: Encoded) -> np.ndarray:
    """Exact order-insensitive codes for a nested column (slow path, Python per row)."""
    assert enc.entries is not None and enc.offsets is not None and enc.valid is not None
    seen: dict[tuple[int, ...] | None, int] = {}
    out = np.empty(len(enc.codes), dtype=np.uint64)
    for i in range(len(out)):
        key = tuple(sorted(enc.entries[enc.offsets[i]:enc.offsets[i + 1]].tolist())) \
            if enc.valid[i] else None
        out[i] = seen.setdefault(key, len(seen))
    return out


def _sorted_entries(enc: Encoded) -> Encoded:
    assert enc.entries is not None and enc.offsets is not None
    row_of = np.repeat(np.arange(len(enc.codes)), np.diff(enc.offsets))
    order = np.lexsort((enc.entries, row_of))
    return Encoded(enc.codes, enc.entries[order], enc.offsets, enc.valid)


def _packed(columns: Sequence[Encoded]) -> list[Encoded]:
    """Flat columns packed exactly into as few uint64 words as their cardinalities allow
    (mixed radix: word = c0 + k0 * (c1 + k1 * (c2 + ...))); nested columns unchanged."""
    words: list[Encoded] = []
    word: np.ndarray | None = None
    radix = 1
    for enc in columns:
        if enc.entries is not None or (len(enc.codes) and enc.codes.min() == enc.codes.max()):
            continue  # nested columns are verified apart; a constant column decides nothing
        k = max(enc.cardinality, 1)
        if word is None or radix * k >= 1 << 63:
            if word is not None:
                words.append(Encoded(word, cardinality=radix))
            word, radix = enc.codes.astype(np.uint64), k
        else:
            word = word + enc.codes * np.uint64(radix)
            radix *= k
    if word is not None:
        words.append(Encoded(word, cardinality=radix))
    return words + [enc for enc in columns if enc.entries is not None]


def factorize(columns: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
    """``(group id per row, representative row per group)``, exact on every column."""
    n = len(columns[0].codes)
    columns = _packed(columns)
    if not columns:
        return np.zeros(n, dtype=np.int64), np.zeros(min(n, 1), dtype=np.int64)
    if len(columns) == 1 and columns[0].entries is None:
        return _group(columns[0].codes)  # one exact word: grouping on it is exact
    h = np.zeros(n, dtype=np.uint64)
    for enc in columns:
        h = mix(h ^ enc.codes) + _GOLDEN
    gid, reps = _group(h)
    rows, rep_rows = np.arange(n), reps[gid]
    if all(same_rows(enc, rows, rep_rows).all() for enc in columns):
        return gid, reps
    # Map entries in another order (the fingerprint ignores order, the check does not): sort
    # entries within rows and check again; only a real 64-bit collision goes further.
    columns = [_sorted_entries(enc) if enc.entries is not None else enc for enc in columns]
    if all(same_rows(enc, rows, rep_rows).all() for enc in columns):
        return gid, reps
    exact = [Encoded(_canonical(enc)) if enc.entries is not None else enc for enc in columns]
    stacked = np.stack([enc.codes for enc in exact], axis=1)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), first.astype(np.int64)
