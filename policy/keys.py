"""Exact row keys for Arrow tables: which rows are equal on a set of columns, columnar.

Every column becomes integer codes per row, exact and stable across chunks (one value → one
code, ``null`` included): dictionary columns map their dictionary once and gather indices,
other scalars are dictionary-encoded; a column holding one value throughout is a broadcast.
Map columns (labels) get one exact code per row when their keys and values allow it
(:func:`_exact_map`: a digit per key, no sorting); otherwise, and for lists (domains), they
keep exact per-entry codes plus a 64-bit fingerprint per row.

:func:`factorize` packs the flat codes into one word in mixed radix, renumbering densely
whenever the next column would overflow it, and groups by that word: exact, no verification.
Only columns left with fingerprints are hashed, grouped, then *verified* against each group's
representative on the exact entries; a fingerprint collision, or entries in another order,
can only cost the slower exact path, never merge rows that differ.

Data read from Parquet with ``read_dictionary`` on string leaves (as the store reads it) needs
no string hashing at all; plain strings are dictionary-encoded here (the dominant cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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
        # Narrow codes halve the memory traffic of the per-row gathers that use them.
        wide = len(self.codes) + len(values) >= 1 << 32
        return np.fromiter((self.codes.setdefault(v, len(self.codes)) for v in values),
                           dtype=np.uint64 if wide else np.uint32, count=len(values))


def _flat_codes(chunk: pa.Array, coder: _Coder) -> np.ndarray:
    """Exact codes of a scalar column chunk: one code per distinct value, null is code 0."""
    if chunk.null_count == len(chunk):
        return np.zeros(len(chunk), dtype=np.uint32)
    if not pa.types.is_dictionary(chunk.type):
        chunk = pc.dictionary_encode(chunk)
    lut = coder.of_dictionary(chunk.dictionary)
    if len(lut) == 1 and chunk.null_count == 0:
        return np.full(len(chunk), lut[0], dtype=lut.dtype)
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
    constant: bool = False  # one value in every row (``codes`` may be a broadcast)


def _nested_chunk(chunk: pa.Array, coders: tuple[_Coder, _Coder]
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Key codes (maps only), value codes, offsets and validity of one list/map chunk."""
    # Offsets of a (sliced) list/map array point into its whole child array.
    absolute = chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    start, stop = int(absolute[0]), int(absolute[-1])
    valid = chunk.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_map(chunk.type):
        keys = _flat_codes(chunk.keys.slice(start, stop - start), coders[0])
        values = _flat_codes(chunk.items.slice(start, stop - start), coders[1])
        return keys, values, absolute - start, valid
    return None, _flat_codes(chunk.values.slice(start, stop - start), coders[1]), \
        absolute - start, valid


def _fingerprinted(enc: Encoded) -> Encoded:
    """``enc`` with an order-insensitive 64-bit fingerprint of its entries per row."""
    assert enc.entries is not None and enc.offsets is not None and enc.valid is not None
    codes = np.zeros(len(enc.valid), dtype=np.uint64)
    nonempty = np.diff(enc.offsets) > 0
    if len(enc.entries):
        codes[nonempty] = np.add.reduceat(mix(enc.entries + _GOLDEN),
                                          enc.offsets[:-1][nonempty])
    codes[~enc.valid] = _NULL_ROW
    return Encoded(codes, enc.entries, enc.offsets, enc.valid)


def _nested(chunks: Sequence[pa.Array], t: pa.DataType) -> Encoded:
    exact = _exact_map(chunks) if pa.types.is_map(t) else None
    if exact is not None:
        return exact
    coders = (_Coder(), _Coder())
    parts = [_nested_chunk(c, coders) for c in chunks] or [_nested_chunk(
        pa.array([], type=t), coders)]
    shifts = np.cumsum([0] + [len(p[1]) for p in parts[:-1]])
    offsets = np.concatenate([parts[0][2][:1]] + [
        p[2][1:] + s for p, s in zip(parts, shifts, strict=True)])
    valid = np.concatenate([p[3] for p in parts])
    if pa.types.is_map(t):
        keys = [p[0] for p in parts if p[0] is not None]
        entries = np.concatenate([(k << np.uint64(32)) | p[1]
                                  for k, p in zip(keys, parts, strict=True)])
    else:
        entries = np.concatenate([p[1] for p in parts])
    return _fingerprinted(Encoded(np.zeros(0, dtype=np.uint64), entries, offsets, valid))


def encode(column: pa.ChunkedArray | pa.Array) -> Encoded:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    t = column.type
    if pa.types.is_map(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        return _nested(chunks, t)
    coder = _Coder()
    constant = _constant(chunks, coder)
    if constant is not None:
        return constant
    codes = [_flat_codes(c, coder) for c in chunks]
    return Encoded(np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint64),
                   cardinality=len(coder.codes))


def _constant(chunks: Sequence[pa.Array], coder: _Coder) -> Encoded | None:
    """Codes of a column that holds one value throughout (all null, or one dictionary value
    and no null) as a read-only broadcast, without a pass over the rows; else ``None``."""
    n = sum(len(c) for c in chunks)
    if all(c.null_count == len(c) for c in chunks):
        return Encoded(np.broadcast_to(np.uint64(0), (n,)), cardinality=1, constant=True)
    if not all(pa.types.is_dictionary(c.type) and c.null_count == 0 for c in chunks):
        return None
    for c in chunks:
        coder.of_dictionary(c.dictionary)
        if len(coder.codes) > 2:
            return None
    return Encoded(np.broadcast_to(np.uint64(1), (n,)), cardinality=2, constant=True)


def _exact_map(chunks: Sequence[pa.Array]) -> Encoded | None:
    """Flat exact codes for a map column when they fit one word, else ``None``.

    A map is a set of (key, value) entries with distinct keys, so it is exactly the digit
    string "value (or absent) per key": with ``r_k`` = distinct values seen under key ``k``
    plus one, a row is ``1 + sum((rank(v_k) + 1) * prod(r_j for j < k))`` — order-insensitive
    without sorting, one add per entry. Null is 0, ``{}`` is 1. The sum also carries one bit
    per key below the digits, so a repeated key in a row (Arrow does not forbid it) shows as
    a carry; such rows, or a product past 2**63, keep the hashed, verified path. Works chunk
    by chunk on the dictionary indices, so temporaries stay small.
    """
    coders = (_Coder(), _Coder())
    parts = [_map_children(c) for c in chunks]
    luts = [(coders[0].of_dictionary(k.dictionary), coders[1].of_dictionary(v.dictionary))
            for k, v, _, _ in parts]
    n_keys, n_values = len(coders[0].codes), len(coders[1].codes)
    if n_keys * n_values > 1 << 24 or n_keys > 40:
        return None
    luts = [((k * np.uint64(n_values)).astype(np.uint32), v.astype(np.uint32)) for k, v in luts]

    pairs = [_lookup(k, kl) + _lookup(v, vl) for (k, v, _, _), (kl, vl) in zip(parts, luts,
                                                                                 strict=True)]
    # Digits only for the (key, value) pairs that occur keep the codes tight, and with them
    # the words factorize packs them into.
    present = np.zeros(n_keys * n_values, dtype=np.uint64)
    for pair in pairs:
        present[pair] = 1
    table = present.reshape(n_keys, n_values)
    radix = table.sum(axis=1) + np.uint64(1)
    cardinality = math.prod(int(r) for r in radix) + 1
    if cardinality << n_keys >= 1 << 63:
        return None
    place = np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.uint64)
    rank = np.cumsum(table, axis=1, dtype=np.uint64)  # rank(v) + 1 where present
    bit = np.left_shift(np.uint64(1), np.arange(n_keys, dtype=np.uint64))
    lut = (((rank * place[:, None]) << np.uint64(n_keys)) | bit[:, None]).reshape(-1)
    out = []
    for i, (_, _, offsets, valid) in enumerate(parts):
        lengths = np.diff(offsets)
        nonempty = lengths > 0
        codes = np.ones(len(valid), dtype=np.uint64)
        if offsets[-1] > 0:
            sums = _row_sums(lut[pairs[i]], offsets, lengths, nonempty)
            seen = np.bitwise_count(sums & np.uint64((1 << n_keys) - 1))
            if not np.array_equal(seen, lengths[nonempty]):
                return None  # a repeated key within a row
            codes[nonempty] += sums >> np.uint64(n_keys)
        codes[~valid] = 0
        out.append(codes)
    return Encoded(np.concatenate(out) if out else np.zeros(0, dtype=np.uint64),
                   cardinality=cardinality)


def _map_children(chunk: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """A map chunk's keys and items (dictionary-encoded), offsets from 0, and validity."""
    absolute = chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    start, stop = int(absolute[0]), int(absolute[-1])
    children = [c.slice(start, stop - start) for c in (chunk.keys, chunk.items)]
    keys, items = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c)
                   for c in children]
    return keys, items, absolute - start, chunk.is_valid().to_numpy(zero_copy_only=False)


def _lookup(arr: pa.DictionaryArray, lut: np.ndarray) -> np.ndarray:
    """``lut[index]`` per element, 0 (null's code) where null."""
    if arr.null_count == len(arr):
        return np.zeros(len(arr), dtype=lut.dtype)
    if arr.null_count:
        codes = lut[pc.fill_null(arr.indices, 0).to_numpy(zero_copy_only=False)]
        codes[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
        return codes  # type: ignore[no-any-return]
    return lut[arr.indices.to_numpy(zero_copy_only=False)]  # type: ignore[no-any-return]


def _row_sums(entries: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
              nonempty: np.ndarray) -> np.ndarray:
    """Per non-empty row, the sum of its entries (strided adds when all rows are as long)."""
    width = int(lengths[0])
    if width and offsets[0] == 0 and lengths.min() == lengths.max():
        total = entries[0::width].copy()
        for j in range(1, width):
            total += entries[j::width]
        return total
    return np.add.reduceat(entries, offsets[:-1][nonempty])


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
    """Group ids per row (by first appearance) and a row of each group, by one hash pass."""
    encoded = pc.dictionary_encode(pa.array(h))
    gid = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    reps = np.empty(len(encoded.dictionary), dtype=np.int64)
    reps[gid] = np.arange(len(h), dtype=np.int64)  # any row of a group represents it
    return gid, reps


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


def _dense(word: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """``(group id per row, a row per group)`` of an exact word with values below ``radix``:
    by a presence table when it is small, else by one hash aggregation."""
    n = len(word)
    if radix > 2 * n + (1 << 16):
        return _group(word)
    present = np.zeros(radix, dtype=np.bool_)
    present[word] = True
    ids = np.cumsum(present, dtype=np.int32 if radix < 1 << 31 else np.int64)
    gid = ids[word].astype(np.int64) - 1
    reps = np.empty(int(ids[-1]) if radix else 0, dtype=np.int64)
    reps[gid] = np.arange(n, dtype=np.int64)  # any row of a group represents it
    return gid, reps


def _renumbered(codes: np.ndarray, radix: int) -> tuple[np.ndarray, int]:
    """``codes`` below ``radix`` renumbered densely, and how many distinct there are."""
    present = np.zeros(radix, dtype=np.bool_)
    present[codes] = True
    ids = np.cumsum(present, dtype=np.uint64)
    return ids[codes] - np.uint64(1), int(ids[-1])


def _cardinality(enc: Encoded) -> int:
    return enc.cardinality or (int(enc.codes.max()) + 1 if len(enc.codes) else 1)


def _packed(columns: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray] | None:
    """Group the flat columns exactly: pack codes in mixed radix (word = c0 + k0 * (c1 +
    ...)) and, when the next column would overflow the word, renumber the word densely by
    its groups first. ``None`` when no flat column varies."""
    word: np.ndarray | None = None
    radix = 1
    for enc in columns:
        if enc.entries is not None or enc.constant or _cardinality(enc) == 1:
            continue  # nested columns are verified apart; a constant column decides nothing
        codes, k = enc.codes, _cardinality(enc)
        if 1 << 12 < k <= 2 * len(codes) + (1 << 16):
            codes, k = _renumbered(codes, k)  # sparse codes (label maps): make them dense
        if word is not None and radix * k >= 1 << 63:
            gid, reps = _dense(word, radix)
            word, radix = gid.astype(np.uint64), len(reps)
            if radix * k >= 1 << 63:
                gid, reps = _dense(codes, k)
                codes, k = gid.astype(np.uint64), len(reps)
        if word is None:
            word, radix = codes.astype(np.uint64), k  # a copy: added to in place below
        else:
            word += codes * np.uint64(radix)
            radix *= k
    return None if word is None else _dense(word, radix)


def factorize(columns: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
    """``(group id per row, representative row per group)``, exact on every column."""
    n = len(columns[0].codes)
    flat = _packed(columns)
    nested = [enc for enc in columns if enc.entries is not None]
    if not nested:
        if flat is None:
            return np.zeros(n, dtype=np.int64), np.zeros(min(n, 1), dtype=np.int64)
        return flat  # one exact word: grouping on it is exact
    columns = nested if flat is None else [
        Encoded(flat[0].astype(np.uint64), cardinality=len(flat[1])), *nested]
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
