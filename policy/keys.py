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
no string hashing per row, only of each distinct dictionary's values; plain strings are
dictionary-encoded here (the dominant cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

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
    return _flat(chunks)


def _flat(chunks: Sequence[pa.Array]) -> Encoded:
    """Exact codes of a scalar column (one per distinct value, null is 0), in the narrowest
    unsigned type that holds them, written chunk by chunk into one array."""
    encoded = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c)
               for c in chunks]
    luts, cardinality = _dictionary_codes([c.dictionary for c in encoded])
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                 if cardinality <= np.iinfo(t).max)
    narrow: dict[int, np.ndarray] = {}
    out = np.empty(sum(len(c) for c in encoded), dtype=dtype)
    start = 0
    for chunk, (which, lut) in zip(encoded, luts, strict=True):
        part = out[start:start + len(chunk)]
        start += len(chunk)
        if chunk.null_count == len(chunk) or not len(lut):
            part.fill(0)
            continue
        table = narrow.get(which)
        if table is None:
            table = narrow[which] = lut.astype(dtype)
        indices = chunk.indices if not chunk.null_count else pc.fill_null(chunk.indices, 0)
        # Dictionary indices are in range: "wrap" only spares the bounds check.
        np.take(table, indices.to_numpy(zero_copy_only=False), out=part, mode="wrap")
        if chunk.null_count:
            part[~chunk.is_valid().to_numpy(zero_copy_only=False)] = 0
    return Encoded(out, cardinality=cardinality)


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
    a carry; such rows, or a product past 2**63, keep the hashed, verified path.

    Works on the dictionary indices, never on per-entry global codes, in blocks of rows
    small enough for the cache: an entry's chunk-local pair ``key index * (values in the
    chunk's value dictionary + 1) + value index`` is one multiply-add, and its digit one
    gather through a small table of the chunk's pairs; rows are summed by strided adds when
    all are as long (dictionaries much larger than their chunks use global pairs instead).
    Digits go only to the pairs that occur, which a first pass counts (``bincount`` on the
    local pairs). Chunks sharing their dictionaries (as chunks read from one Parquet row
    group do) are at first counted on their first chunk only: a pair that chunk lacks has a
    0 digit, which fails the check like a repeated key, and only then are all chunks counted
    and coded again. Codes are 32-bit when they fit.
    """
    parts = [_map_children(c) for c in chunks]
    keys, n_keys = _dictionary_codes([p[0].dictionary for p in parts])
    values, n_values = _dictionary_codes([p[1].dictionary for p in parts])
    if n_keys * n_values > 1 << 24 or n_keys > 40:
        return None
    groups: dict[tuple[int, int], _Pairs] = {}
    for (_, _, offsets, _), kd, vd in zip(parts, keys, values, strict=True):
        group = groups.setdefault((kd[0], vd[0]), _Pairs(kd[1], vd[1], n_values))
        group.entries += int(offsets[-1] - offsets[0])
    chunk_groups = [groups[kd[0], vd[0]] for kd, vd in zip(keys, values, strict=True)]
    buffer = np.empty(max((_block_entries(p[2]) for p in parts), default=0), dtype=np.int32)
    present = np.zeros(n_keys * n_values, dtype=np.bool_)

    def count(chunks: Sequence[int]) -> None:
        for i in chunks:
            k, v, offsets, _ = parts[i]
            group = chunk_groups[i]
            ki, vi = group.indices(k, v)
            for _, _, a, b in _blocks(offsets):
                group.count(group.pairs(ki[a:b], vi[a:b], buffer), present)
        for group in groups.values():
            group.mark(present)

    # Count the pairs of one chunk per pair of dictionaries only: chunks sharing those
    # mostly hold the same pairs. Pairs not counted have no digit, so a row holding one
    # fails the check like a repeated key; only then are the other chunks counted too, and
    # all coded again.
    first: dict[int, int] = {}
    rest = []
    for i, (_, _, offsets, _) in enumerate(parts):
        if offsets[-1] > offsets[0]:
            if id(chunk_groups[i]) in first:
                rest.append(i)
            else:
                first[id(chunk_groups[i])] = i
    count(list(first.values()))
    for speculative in (bool(rest), False):
        digits = _digits(present.reshape(n_keys, n_values))
        if digits is None:
            return None
        codes = _map_codes(parts, chunk_groups, groups, digits, buffer)
        if codes is not None or not speculative:
            return codes
        count(rest)
    raise AssertionError("unreachable")


def _digits(table: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """``(digit per (key, value) pair, cardinality, bits)`` for the pairs ``table`` marks as
    present (a 0 digit elsewhere), or ``None`` when the codes would not fit 63 bits."""
    # Digits only for the (key, value) pairs that occur keep the codes tight, and with them
    # the words factorize packs them into.
    n_keys = table.shape[0]
    radix = table.sum(axis=1, dtype=np.uint64) + np.uint64(1)
    cardinality = math.prod(int(r) for r in radix) + 1
    if cardinality << n_keys >= 1 << 63:
        return None
    dtype = np.uint32 if cardinality << n_keys < 1 << 32 else np.uint64
    place = np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.uint64)
    rank = np.cumsum(table, axis=1, dtype=np.uint64)  # rank(v) + 1 where present
    bit = np.left_shift(np.uint64(1), np.arange(n_keys, dtype=np.uint64))
    lut = np.where(table, ((rank * place[:, None]) << np.uint64(n_keys)) | bit[:, None], 0)
    return lut.reshape(-1).astype(dtype), cardinality, n_keys


def _map_codes(parts: Sequence[tuple[pa.Array, pa.Array, np.ndarray, np.ndarray | None]],
               chunk_groups: Sequence[_Pairs], groups: dict[tuple[int, int], _Pairs],
               digits: tuple[np.ndarray, int, int], buffer: np.ndarray) -> Encoded | None:
    """The second pass: each entry's digit, summed per row; ``None`` when a row fails the
    check (a repeated key, or a pair without a digit)."""
    lut, cardinality, n_keys = digits
    for group in groups.values():
        group.lut = lut if group.local is None else lut[group.local]
    codes = np.empty(sum(len(p[2]) - 1 for p in parts), dtype=lut.dtype)
    gathered = np.empty(len(buffer), dtype=lut.dtype)
    row = 0
    for (k, v, offsets, valid), group in zip(parts, chunk_groups, strict=True):
        n = len(offsets) - 1
        out = codes[row:row + n]
        row += n
        if offsets[-1] == offsets[0]:
            out.fill(1)
        else:
            assert group.lut is not None
            ki, vi = group.indices(k, v)
            for r, s, a, b in _blocks(offsets):
                entries = np.take(group.lut, group.pairs(ki[a:b], vi[a:b], buffer),
                                  out=gathered[:b - a], mode="wrap")
                if not _row_codes(entries, offsets[r:s + 1], out[r:s], n_keys):
                    return None
        if valid is not None:
            out[~valid] = 0
    return Encoded(codes, cardinality=cardinality)


class _Pairs:
    """Chunk-local (key, value) pair indices for chunks sharing one pair of dictionaries."""

    def __init__(self, key_codes: np.ndarray, value_codes: np.ndarray, n_values: int) -> None:
        # One more slot on either side for null, whose code is 0.
        self.keys = np.append(key_codes, 0).astype(np.int64)
        self.values = np.append(value_codes, 0).astype(np.int64)
        self.n_values = n_values
        self.entries = 0
        self.seen: np.ndarray | None = None  # which local pairs occur
        self.local: np.ndarray | None = None  # local pair → global pair
        self.lut: np.ndarray | None = None  # digit per pair index (local or global)

    @property
    def size(self) -> int:
        return len(self.keys) * len(self.values)

    def _is_local(self) -> bool:
        # Chunk-local pairs need tables the size of the dictionaries' product: worth it
        # unless that dwarfs the entries (dictionaries much larger than their chunks).
        if self.local is None and self.seen is None:
            size = self.size
            if size < 1 << 31 and size <= max(1 << 16, 4 * self.entries):
                self.seen = np.zeros(size, dtype=np.bool_)
                self.local = (self.keys[:, None] * self.n_values + self.values).reshape(-1)
            else:
                self.local = None
                self.seen = np.zeros(0, dtype=np.bool_)
        return self.local is not None

    def indices(self, keys: pa.Array, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """A chunk's key and value indices into this group's dictionaries (null: the last)."""
        return _indices(keys, len(self.keys) - 1), _indices(values, len(self.values) - 1)

    def pairs(self, k: np.ndarray, v: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """Each entry's pair index (chunk-local, or global on the fallback), in ``buffer``."""
        out = buffer[:len(k)]
        if self._is_local():
            np.multiply(k, len(self.values), out=out, dtype=np.int32, casting="unsafe")
            np.add(out, v, out=out, dtype=np.int32, casting="unsafe")
        else:  # global pairs: two small gathers per entry
            np.take((self.keys * self.n_values).astype(np.int32), k, out=out, mode="wrap")
            out += np.take(self.values.astype(np.int32), v, mode="wrap")
        return out

    def count(self, pairs: np.ndarray, present: np.ndarray) -> None:
        """Record which pairs occur."""
        if self.local is None:
            present[pairs] = True
        elif self.size <= len(pairs):
            assert self.seen is not None
            self.seen |= np.bincount(pairs, minlength=self.size).astype(np.bool_)
        else:
            assert self.seen is not None
            self.seen[pairs] = True

    def mark(self, present: np.ndarray) -> None:
        """Mark the global pairs this group's chunks hold."""
        if self.local is not None and self.seen is not None:
            present[self.local[self.seen]] = True


def _indices(arr: pa.DictionaryArray, null: int) -> np.ndarray:
    """Dictionary indices per element, ``null`` where null."""
    if arr.null_count == 0:
        return arr.indices.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
    if arr.null_count == len(arr):
        return np.full(len(arr), null, dtype=np.int64)
    indices = pc.fill_null(arr.indices, 0).to_numpy(zero_copy_only=False).copy()
    indices[~arr.is_valid().to_numpy(zero_copy_only=False)] = null
    return indices  # type: ignore[no-any-return]


def _dictionary_codes(dictionaries: Sequence[pa.Array]
                      ) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Per dictionary, ``(id, code per value)``: equal dictionaries share an id, equal values
    share a code across all of them, null's code is 0; and how many codes there are.

    Each distinct dictionary (by its buffers: chunks read from one Parquet row group share
    theirs) is coded once; strings, binaries and integers by one hash pass over all of them,
    other types (floats: NaN, -0.0) by Python equality, as :class:`_Coder` does."""
    ids: dict[tuple[int, int, tuple[int, ...]], int] = {}
    distinct: list[pa.Array] = []
    which = []
    for d in dictionaries:
        key = (d.offset, len(d), tuple(b.address if b is not None else 0 for b in d.buffers()))
        if key not in ids:
            ids[key] = len(distinct)
            distinct.append(d)
        which.append(ids[key])
    if not distinct:
        return [], 1
    t = distinct[0].type
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_integer(t)):
        try:
            encoded = pc.dictionary_encode(pa.concat_arrays(distinct))
        except (pa.ArrowInvalid, pa.ArrowCapacityError):  # over 2 GiB of strings
            pass
        else:
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False) + 1
            bounds = np.cumsum([0] + [len(d) for d in distinct]).tolist()
            luts = [codes[a:b] for a, b in pairwise(bounds)]
            return [(i, luts[i]) for i in which], len(encoded.dictionary) + 1
    coder = _Coder()
    luts = [coder.of_dictionary(d) for d in distinct]
    return [(i, luts[i]) for i in which], len(coder.codes)


_BLOCK = 1 << 17  # entries per block: a block's temporaries stay in cache


def _blocks(offsets: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(first row, end row, first entry, end entry)`` of a chunk's blocks of rows, entries
    counted from the chunk's first."""
    n, base = len(offsets) - 1, offsets[0]
    step = max(1, _BLOCK * n // max(1, int(offsets[-1] - base)))
    return [(r, min(n, r + step), int(offsets[r] - base), int(offsets[min(n, r + step)] - base))
            for r in range(0, n, step)]


def _block_entries(offsets: np.ndarray) -> int:
    return max((b - a for _, _, a, b in _blocks(offsets)), default=0)


def _map_children(chunk: pa.Array
                  ) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray | None]:
    """A map chunk's keys and items (dictionary-encoded, from its first entry), its offsets
    (into its child arrays) and its validity (``None``: no null)."""
    offsets = chunk.offsets.to_numpy(zero_copy_only=False)
    start, stop = int(offsets[0]), int(offsets[-1])
    children = [c.slice(start, stop - start) for c in (chunk.keys, chunk.items)]
    keys, items = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c)
                   for c in children]
    valid = chunk.is_valid().to_numpy(zero_copy_only=False) if chunk.null_count else None
    return keys, items, offsets, valid


def _row_codes(entries: np.ndarray, offsets: np.ndarray, out: np.ndarray, n_keys: int) -> bool:
    """``1 + digits`` per row into ``out`` from its entries' digits (the rows' entries, from
    the first); ``False`` when a row fails the check (a key twice, or a pair without a
    digit). Strided adds into ``out`` itself when all rows are as long."""
    width = (len(entries) // (len(offsets) - 1)) if len(offsets) > 1 else 0
    shift, mask = entries.dtype.type(n_keys), entries.dtype.type((1 << n_keys) - 1)
    if width and width * (len(offsets) - 1) == len(entries) and not (
            offsets[1:] - offsets[:-1] != width).any():
        if width == 1:
            out[...] = entries
        else:
            np.add(entries[0::width], entries[1::width], out=out)
            for j in range(2, width):
                out += entries[j::width]
        if np.bitwise_count(out & mask).min() != width:
            return False
        out >>= shift
        out += entries.dtype.type(1)
        return True
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    sums = np.add.reduceat(entries, (offsets[:-1] - offsets[0])[nonempty])
    if not np.array_equal(np.bitwise_count(sums & mask), lengths[nonempty]):
        return False
    out.fill(1)
    out[nonempty] += sums >> shift
    return True


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
    return gid, _a_row_per_group(gid, len(encoded.dictionary))


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
    ids = np.cumsum(present, dtype=np.int64)
    ids -= 1  # on the table, not on every row
    gid = ids[word]
    return gid, _a_row_per_group(gid, int(ids[-1]) + 1 if radix else 0)


def _a_row_per_group(gid: np.ndarray, groups: int) -> np.ndarray:
    """For each group id, one row holding it (any one; row 0 for an id no row holds), in
    blocks: no row-sized index."""
    reps = np.zeros(groups, dtype=np.int64)
    for start in range(0, len(gid), _BLOCK):
        stop = min(start + _BLOCK, len(gid))
        reps[gid[start:stop]] = np.arange(start, stop, dtype=np.int64)
    return reps


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
    its groups first. ``None`` when no flat column varies (or there are no rows).

    Before a column would take the word past what a presence table renumbers cheaply, the
    word is renumbered and the column checked against it: a column that is a function of
    the columns before it (a pod's labels or namespace, given its name) adds no group and is
    left out, which keeps the word small enough that no hashing is needed. Callers put such
    determining columns first."""
    n = len(columns[0].codes) if columns else 0
    word = _Word(n)
    for enc in columns:
        if n and enc.entries is None and not enc.constant and _cardinality(enc) > 1:
            word.add(enc.codes, _cardinality(enc))  # nested columns are verified apart
    return word.groups()


class _Word:
    """The mixed-radix word of the flat columns packed so far."""

    def __init__(self, n: int) -> None:
        self.cheap = 2 * n + (1 << 16)  # the widest word _dense renumbers without hashing
        self.word: np.ndarray | None = None
        self.radix = 1
        self.reps: np.ndarray | None = None  # a row per word value, while the word is dense
        self.anchors: list[_Anchor] = []

    def follows(self, codes: np.ndarray, k: int) -> bool:
        """Is the column a function of one column already packed, or of the word (checked
        only where packing it would make the word too wide to renumber cheaply)?"""
        if any(a.determines(codes) for a in self.anchors):
            return True
        if self.word is None or self.radix * k <= self.cheap:
            return False
        if self.reps is None and self.radix <= self.cheap:
            gid, self.reps = _dense(self.word, self.radix)
            self.word, self.radix = gid.view(np.uint64), len(self.reps)
        return self.reps is not None and np.array_equal(codes[self.reps][self.word], codes)

    def add(self, codes: np.ndarray, k: int) -> None:
        if self.follows(codes, k):
            return  # no new group
        if k <= self.cheap:
            self.anchors.append(_Anchor(codes, k))
        if 1 << 12 < k <= self.cheap:
            codes, k = _renumbered(codes, k)  # sparse codes (label maps): make them dense
        if self.word is not None and self.radix * k >= 1 << 63:
            gid, reps = _dense(self.word, self.radix)
            self.word, self.radix = gid.astype(np.uint64), len(reps)
            if self.radix * k >= 1 << 63:
                gid, distinct = _dense(codes, k)
                codes, k = gid.astype(np.uint64), len(distinct)
        if self.word is None:
            self.word, self.radix = codes.astype(np.uint64), k  # a copy: added to in place
        else:
            _add_scaled(self.word, codes, self.radix)
            self.radix *= k
        self.reps = None

    def groups(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.word is None else _dense(self.word, self.radix)


def _add_scaled(word: np.ndarray, codes: np.ndarray, scale: int) -> None:
    """``word += codes * scale`` in blocks, without a row-sized temporary."""
    buffer = np.empty(min(_BLOCK, len(word)), dtype=np.uint64)
    for start in range(0, len(word), _BLOCK):
        stop = min(start + _BLOCK, len(word))
        part = buffer[:stop - start]
        np.multiply(codes[start:stop], np.uint64(scale), out=part, dtype=np.uint64,
                    casting="unsafe")
        word[start:stop] += part


class _Anchor:
    """A column packed into the word, to test whether a later column is a function of it."""

    def __init__(self, codes: np.ndarray, cardinality: int) -> None:
        self.codes, self.cardinality = codes, cardinality
        self._rows: np.ndarray | None = None

    def determines(self, other: np.ndarray) -> bool:
        """Is ``other`` the same in every row that has the same code here? (A sample of
        rows first, so that the usual answer, no, costs little.)"""
        step = max(1, len(other) >> 16)
        if not _same_per_code(self.codes[::step], other[::step], self.cardinality):
            return False
        if self._rows is None:
            self._rows = _a_row_per_group(self.codes, self.cardinality)
        per_code = other[self._rows]
        return all(np.array_equal(per_code[self.codes[start:start + _BLOCK]],
                                  other[start:start + _BLOCK])
                   for start in range(0, len(other), _BLOCK))


def _same_per_code(codes: np.ndarray, other: np.ndarray, cardinality: int) -> bool:
    table = np.zeros(cardinality, dtype=other.dtype)
    table[codes] = other
    return np.array_equal(table[codes], other)


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
