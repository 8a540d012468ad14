"""policy.keys: exact row equality, columnar — including the cases a hash alone gets wrong."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.keys import Encoded, encode, factorize

LABELS = pa.map_(pa.string(), pa.string())


def groups(*columns: pa.Array | pa.ChunkedArray) -> list[int]:
    """Group id per row, renumbered by first appearance."""
    gid, reps = factorize([encode(c) for c in columns])
    assert all(gid[r] == g for g, r in enumerate(reps))
    seen: dict[int, int] = {}
    return [seen.setdefault(int(g), len(seen)) for g in gid]


def test_maps_equal_in_any_order_are_one_key() -> None:
    col = pa.array([[("a", "1"), ("b", "2")], [("b", "2"), ("a", "1")], [("a", "1")]],
                   type=LABELS)
    assert groups(col) == [0, 0, 1]


def test_null_empty_and_values_are_distinct() -> None:
    assert groups(pa.array([{}, None, {"a": ""}, {}], type=LABELS)) == [0, 1, 2, 0]
    assert groups(pa.array([None, -1, 0, None, -1], type=pa.int32())) == [0, 1, 2, 0, 1]
    assert groups(pa.array([[], None, [""], None], type=pa.list_(pa.string()))) == [0, 1, 2, 1]


def test_swapped_values_are_different_keys() -> None:
    col = pa.array([{"a": "1", "b": "2"}, {"a": "2", "b": "1"}], type=LABELS)
    assert groups(col) == [0, 1]


def test_chunks_with_their_own_dictionaries_and_slices_agree() -> None:
    d1 = pa.DictionaryArray.from_arrays(pa.array([0, 1]), pa.array(["x", "y"]))
    d2 = pa.DictionaryArray.from_arrays(pa.array([1, 0]), pa.array(["x", "y"]))
    d3 = pa.DictionaryArray.from_arrays(pa.array([0]), pa.array(["y"]))
    assert groups(pa.chunked_array([d1, d2, d3])) == [0, 1, 1, 0, 1]
    maps = pa.array([{"z": "0"}, {"a": "1"}, {"b": "2"}, {"a": "1"}], type=LABELS)
    assert groups(pa.chunked_array([maps.slice(1, 2), maps.slice(3, 1)])) == [0, 1, 0]


def test_several_columns_combine() -> None:
    a = pa.array(["x", "x", "y", "x"])
    b = pa.array([1, 2, 1, 1])
    assert groups(a, b) == [0, 1, 2, 0]


def test_a_fingerprint_collision_never_merges_rows() -> None:
    """Two different label maps given the same fingerprint on purpose stay apart."""
    enc = Encoded(codes=np.array([7, 7, 7], dtype=np.uint64),
                  entries=np.array([1, 2, 1], dtype=np.uint64),
                  offsets=np.array([0, 1, 2, 3]), valid=np.array([True, True, True]))
    gid, reps = factorize([enc])
    assert gid[0] == gid[2] != gid[1]
    assert sorted(reps.tolist()) == [0, 1]


def test_constant_and_empty_columns() -> None:
    assert groups(pa.array(["x", "x", "x"])) == [0, 0, 0]
    assert groups(pa.array(["x", "x"]), pa.array([None, None], type=pa.string())) == [0, 0]
    gid, reps = factorize([encode(pa.array([], type=pa.string()))])
    assert len(gid) == 0 and len(reps) == 0


def test_maps_with_many_keys_and_values_stay_exact() -> None:
    """Too many keys x values for a digit per value: digits for the pairs that occur."""
    rows = [{f"k{j}": f"v{j}-{i % 2}" for j in range(20)} for i in range(4)]
    rows.append(dict(reversed(list(rows[0].items()))))
    rows.append({**rows[1], "k3": "v3-0"})
    assert groups(pa.array(rows, type=LABELS)) == [0, 1, 0, 1, 0, 2]


def test_a_repeated_key_is_not_the_same_map() -> None:
    col = pa.array([[("a", "1"), ("a", "1")], [("a", "1")], [("a", "1"), ("a", "1")],
                    [("a", "2")]], type=LABELS)
    assert groups(col) == [0, 1, 0, 2]


def test_dictionary_map_leaves_with_null_values() -> None:
    keys = pa.array(["a", "b", "a"]).dictionary_encode()
    items = pa.array(["1", None, None]).dictionary_encode()
    col = pa.MapArray.from_arrays(pa.array([0, 2, 3]), keys, items)
    assert groups(pa.chunked_array([col, col.slice(1)])) == [0, 1, 1]
    plain = pa.array([{"a": None}, {"a": "1", "b": None}, {"a": None}], type=LABELS)
    assert groups(plain) == [0, 1, 0]


# Map columns as the store reads them: dictionary leaves, chunks with their own dictionaries
# or sharing one, slices, null rows (some hiding entries), and repeated keys.

KEYS = ["a", "b", "c", "d"]
VALUES = ["1", "2", "3", "", None]
Row = list[tuple[str, str | None]] | None


def reference(rows: list[Row]) -> list[int]:
    """Group id per row, by first appearance: maps equal as multisets of entries (a set of
    entries when no key repeats), null apart from ``{}``."""
    seen: dict[object, int] = {}
    keys = [None if r is None else tuple(sorted(r, key=lambda e: (e[0], e[1] is None,
                                                                  e[1] or "")))
            for r in rows]
    return [seen.setdefault(k, len(seen)) for k in keys]


def as_groups(codes: np.ndarray) -> list[int]:
    seen: dict[int, int] = {}
    return [seen.setdefault(int(c), len(seen)) for c in codes]


def map_chunk(rows: list[Row], key_dict: pa.Array | None = None,
              value_dict: pa.Array | None = None, hidden: int = 0) -> pa.MapArray:
    """A map array of ``rows``; string leaves, or dictionary leaves over the given
    dictionaries; ``hidden`` entries ("a": "1") under each null row."""
    offsets, keys, values, mask = [0], [], [], []
    for row in rows:
        entries = [("a", "1")] * hidden if row is None else row
        keys += [k for k, _ in entries]
        values += [v for _, v in entries]
        offsets.append(len(keys))
        mask.append(row is None)
    karr: pa.Array = pa.array(keys, pa.string())
    varr: pa.Array = pa.array(values, pa.string())
    if key_dict is not None:
        where = {k: i for i, k in reversed(list(enumerate(key_dict.to_pylist())))}
        karr = pa.DictionaryArray.from_arrays(pa.array([where[k] for k in keys], pa.int32()),
                                              key_dict)
    if value_dict is not None:
        where = {v: i for i, v in reversed(list(enumerate(value_dict.to_pylist())))}
        varr = pa.DictionaryArray.from_arrays(
            pa.array([None if v is None else where[v] for v in values], pa.int32()),
            value_dict)
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), karr, varr,
                                   mask=pa.array(mask, pa.bool_()))


def check_map_column(rows: list[Row], col: pa.ChunkedArray, hidden: bool = False) -> None:
    expected = reference(rows)
    assert groups(col) == expected
    enc = encode(col)
    repeated = any(r is not None and len({k for k, _ in r}) < len(r) for r in rows)
    if not hidden:
        assert (enc.entries is None) == (not repeated)
    if enc.entries is None:
        assert as_groups(enc.codes) == expected
        assert len(enc.codes) == 0 or int(enc.codes.max()) < enc.cardinality
        if not hidden:  # digits only for the (key, value) pairs that occur: tight
            per_key: dict[str, set[str | None]] = {}
            for row in rows:
                for k, v in row or []:
                    per_key.setdefault(k, set()).add(v)
            assert enc.cardinality == math.prod(len(v) + 1 for v in per_key.values()) + 1
        for i, row in enumerate(rows):
            assert (enc.codes[i] == 0) == (row is None)
            assert (enc.codes[i] == 1) == (row == [])


@st.composite
def map_rows(draw: st.DrawFn) -> list[Row]:
    width = draw(st.none() | st.integers(1, len(KEYS)))  # all rows as long: strided path
    entry = st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES))
    maps = st.lists(entry, min_size=width or 0, max_size=width or len(KEYS),
                    unique_by=lambda e: e[0])
    row: st.SearchStrategy[Row] = maps if width else st.none() | maps
    rows: list[Row] = draw(st.lists(row, max_size=40))
    if rows and draw(st.integers(0, 9)) == 0:  # a row holding a key twice
        i = draw(st.integers(0, len(rows) - 1))
        k, v = draw(entry)
        rows[i] = [*(rows[i] or []), (k, v), (k, draw(st.sampled_from(VALUES)))]
    return rows


@st.composite
def cuts(draw: st.DrawFn, n: int) -> list[int]:
    inner = draw(st.lists(st.integers(0, n), max_size=6))
    return [0, *sorted(inner), n]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(map_rows(), st.data())
def test_map_columns_chunked_any_way_are_exact(rows: list[Row], data: st.DataObject) -> None:
    bounds = data.draw(cuts(len(rows)))
    layout = data.draw(st.sampled_from(["plain", "own", "shared", "sliced"]))
    hidden = data.draw(st.sampled_from([0, 0, 1, 2]))
    pieces = [rows[a:b] for a, b in pairwise(bounds)]
    pool_k, pool_v = pa.array([*KEYS, "z"]), pa.array(["9", *VALUES])
    if layout == "plain":
        chunks = [map_chunk(p, hidden=hidden) for p in pieces]
    elif layout == "own":  # each chunk its own dictionaries, in its own order
        chunks = []
        for p in pieces:
            ks = data.draw(st.permutations([*KEYS, "z"]))
            vs = data.draw(st.permutations([*VALUES[:-1], "9"]))
            kd = pa.array([k for k in ks if k != "z" or data.draw(st.booleans())])
            chunks.append(map_chunk(p, kd, pa.array(vs), hidden))
    elif layout == "shared":  # one dictionary object for every chunk
        chunks = [map_chunk(p, pool_k, pool_v, hidden) for p in pieces]
    else:  # slices of one array, its dictionaries sliced too
        junk: list[Row] = [[("z", "9")], None, [("a", "9")]]
        whole = map_chunk(junk + rows + junk, pa.array(["y", *KEYS, "z"]).slice(1),
                          pa.array(["8", "9", *VALUES]).slice(1), hidden)
        chunks = [whole.slice(len(junk) + a, b - a) for a, b in pairwise(bounds)]
    check_map_column(rows, pa.chunked_array(chunks, type=chunks[0].type), bool(hidden))


def test_shared_dictionaries_with_pairs_the_first_chunk_lacks() -> None:
    """Chunks sharing dictionaries are counted on their first chunk only, at first: pairs
    only later chunks hold must still get their own digits."""
    kd, vd = pa.array(KEYS), pa.array(VALUES[:-1])
    first: list[Row] = [[("a", "1"), ("b", "2")]] * 3
    later: list[Row] = [[("a", "1"), ("b", "3")], [("c", ""), ("a", "2")], [("b", "2"),
                                                                          ("a", "1")]]
    rows = first + later + first
    chunks = [map_chunk(first, kd, vd), map_chunk(later, kd, vd), map_chunk(first, kd, vd)]
    check_map_column(rows, pa.chunked_array(chunks))
    enc = encode(pa.chunked_array(chunks))
    assert enc.cardinality == 3 * 3 * 2 + 1  # a: 1, 2; b: 2, 3; c: ""
    assert enc.codes.dtype == np.uint32


def test_a_repeated_key_in_a_chunk_sharing_dictionaries_falls_back() -> None:
    kd, vd = pa.array(KEYS), pa.array(VALUES[:-1])
    rows: list[Row] = [[("a", "1")], [("b", "1")], [("a", "1"), ("a", "1")], [("a", "1")]]
    col = pa.chunked_array([map_chunk(rows[:2], kd, vd), map_chunk(rows[2:], kd, vd)])
    assert encode(col).entries is not None
    check_map_column(rows, col)


def test_null_maps_and_empty_maps_in_every_chunk_shape() -> None:
    kd, vd = pa.array(KEYS), pa.array(VALUES[:-1])
    shapes: list[list[Row]] = [[None, None], [[], []], [None, []], [], [[("a", "1")], None]]
    rows = [r for s in shapes for r in s]
    check_map_column(rows, pa.chunked_array([map_chunk(s, kd, vd) for s in shapes]))
    check_map_column(rows, pa.chunked_array([map_chunk(s) for s in shapes]))
    empty = pa.chunked_array([], type=pa.map_(pa.string(), pa.string()))
    enc = encode(empty)
    assert len(enc.codes) == 0 and enc.entries is None


def test_keys_absent_from_some_chunks() -> None:
    rows: list[Row] = [[("a", "1")], [("b", "2"), ("c", "3")], [("d", "")], [("a", "1")],
                       [("c", "3"), ("b", "2")]]
    chunks = [map_chunk(rows[:1], pa.array(["a"]), pa.array(["1"])),
              map_chunk(rows[1:3], pa.array(["d", "c", "b"]), pa.array(["3", "", "2"])),
              map_chunk(rows[3:], pa.array(["c", "a", "b"]), pa.array(["2", "1", "3"]))]
    check_map_column(rows, pa.chunked_array(chunks))


def test_dictionaries_much_larger_than_their_chunks() -> None:
    """Chunk-local pair tables would dwarf the entries: global pairs instead."""
    big = pa.array([f"v{i}" for i in range(40_000)])
    rows: list[Row] = [[("a", "v39999"), ("b", "v0")], [("b", "v0"), ("a", "v39999")],
                       [("a", "v7")], None, []]
    chunks = [map_chunk(rows[:2], pa.array(KEYS), big), map_chunk(rows[2:], pa.array(KEYS),
                                                                  big.slice(1))]
    check_map_column(rows, pa.chunked_array(chunks))
    rows += [[("a", "v7"), ("a", "v7")]]
    chunks.append(map_chunk(rows[-1:], pa.array(KEYS), big))
    check_map_column(rows, pa.chunked_array(chunks))


def test_wide_codes_and_non_string_leaves() -> None:
    rows: list[Row] = [[(f"k{j}", str((i >> j) & 3)) for j in range(18)] for i in range(6)]
    enc = encode(pa.chunked_array([map_chunk(rows[:3]), map_chunk(rows[3:])]))
    assert enc.entries is None and enc.codes.dtype == np.uint64
    assert as_groups(enc.codes) == reference(rows)
    floats = pa.array([{"a": 1.5}, {"a": -0.0}, {"a": 0.0}, {"a": 1.5}],
                      type=pa.map_(pa.string(), pa.float64()))
    assert groups(floats) == [0, 1, 1, 0]
    ints = pa.array([{1: 2}, {2: 1}, {1: 2}], type=pa.map_(pa.int64(), pa.int64()))
    assert groups(pa.chunked_array([ints.slice(0, 1), ints.slice(1)])) == [0, 1, 0]


def test_maps_too_many_for_one_word_keep_the_verified_path() -> None:
    many_values: list[Row] = [[(f"k{j}", str((i + j) % 4)) for j in range(30)] for i in range(8)]
    many_keys: list[Row] = [[(f"k{j}", "x")] for j in range(45)]
    for rows in (many_values, many_keys, [*many_values, list(reversed(many_values[0] or []))]):
        col = pa.chunked_array([map_chunk(rows[:3]), map_chunk(rows[3:])])
        assert encode(col).entries is not None
        assert groups(col) == reference(rows)


def test_chunks_longer_than_a_block() -> None:
    """Rows are coded in blocks of entries: blocks of equal-length rows and of mixed ones,
    nulls and a repeated key far from the chunk's start."""
    shapes: list[Row] = [[("a", "1"), ("b", "2")], [("b", "2"), ("a", "1")], [("c", "3")],
                         [("a", "2"), ("b", None)]]
    rows = [shapes[i % 2] for i in range(80_000)] + [
        [None, [], *shapes][i % 6] for i in range(60_000)]
    kd, vd = pa.array(KEYS), pa.array(VALUES[:-1])
    chunks = [map_chunk(rows[:100_000], kd, vd), map_chunk(rows[100_000:], kd, vd)]
    enc = encode(pa.chunked_array(chunks))
    assert enc.entries is None and as_groups(enc.codes) == reference(rows)
    rows[-7] = [("c", "3"), ("c", "3")]
    col = pa.chunked_array([chunks[0], map_chunk(rows[100_000:], kd, vd)])
    assert encode(col).entries is not None
    assert groups(col) == reference(rows)


def test_blocks_without_entries() -> None:
    rows: list[Row] = [[("a", "1"), ("b", "2"), ("c", "3")]] * 100_000 + [[]] * 200_000 + [
        [("a", "1")], None]
    enc = encode(pa.chunked_array([map_chunk(rows, pa.array(KEYS), pa.array(VALUES[:-1]))]))
    assert enc.entries is None and as_groups(enc.codes) == reference(rows)


def _naive(*columns: np.ndarray) -> list[int]:
    seen: dict[tuple[int, ...], int] = {}
    return [seen.setdefault(row, len(seen)) for row in zip(*(c.tolist() for c in columns),
                                                            strict=True)]


def _by_first_appearance(gid: np.ndarray) -> list[int]:
    seen: dict[int, int] = {}
    return [seen.setdefault(int(g), len(seen)) for g in gid]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_columns_that_follow_from_others_group_exactly(data: st.DataObject) -> None:
    """Columns that are (or look, on a sample, like) functions of earlier ones — a pod's
    namespace and labels given its name, alone or jointly with another column — are left
    out of the packed word only when that holds on every row."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.sampled_from([50, 70_000, 200_000]))
    name = rng.integers(0, data.draw(st.sampled_from([3, 900, 30_000])), n)
    ns = name % 7  # a function of the name
    labels = (name * 7919) % 100_003  # wide, sparse, a function of the name
    other = rng.integers(0, 5, n)
    joint = (name * 5 + other) % 20_011  # a function of (name, other) only
    broken = ns.copy()
    if data.draw(st.booleans()):  # the dependency breaks on one row, maybe off the sample
        broken[data.draw(st.integers(0, n - 1))] += 1
    cols = [name, ns, labels, other, joint, broken]
    order = data.draw(st.permutations(range(len(cols))))
    chosen = [cols[i] for i in order]
    encoded = [Encoded(c.astype(np.uint32), cardinality=int(c.max()) + 1) for c in chosen]
    gid, reps = factorize(encoded)
    assert _by_first_appearance(gid) == _naive(*chosen)
    assert all(gid[r] == g for g, r in enumerate(reps.tolist()))


def test_a_dependency_broken_off_the_sample_still_splits() -> None:
    n = 1 << 18
    name = np.arange(n) % 1000
    ns = name % 10
    ns[n - 3] = 99  # not in the strided sample the quick test looks at
    gid, _ = factorize([Encoded(c.astype(np.uint32), cardinality=int(c.max()) + 1)
                        for c in (name, ns, np.arange(n) % 3)])
    assert gid[n - 3] not in {gid[i] for i in range(n - 3) if name[i] == name[n - 3]
                              and i % 3 == (n - 3) % 3}
    assert len(set(gid.tolist())) == len(set(zip(name.tolist(), ns.tolist(),
                                                 (np.arange(n) % 3).tolist(), strict=True)))


def test_a_column_that_follows_from_two_others_but_one_row_is_checked_whole() -> None:
    """Labels given (name, namespace) jointly, but for the last row: checked on every row
    against the packed word, not on a sample."""
    n = 70_000
    rng = np.random.default_rng(5)
    name, other = rng.integers(0, 900, n), rng.integers(0, 5, n)
    joint = (name * 5 + other) % 20_011
    joint[-1] = 20_010 if joint[-1] != 20_010 else 0
    cols = (name, other, joint)
    gid, _ = factorize([Encoded(c.astype(np.uint32), cardinality=int(c.max()) + 1)
                        for c in cols])
    assert _by_first_appearance(gid) == _naive(*cols)


def test_flat_codes_are_narrow_and_exact_across_chunks() -> None:
    """Codes take the narrowest type that holds them; plain and dictionary chunks, nulls and
    values past each width's limit still code one value to one code."""
    for distinct in (3, 300, 70_000):
        values = np.arange(distinct, dtype=np.int64) * 7
        plain = pa.array([*values.tolist(), None, 0])
        dictionary = pa.DictionaryArray.from_arrays(  # its own dictionary, reversed
            pa.array([0, None, distinct - 1], type=pa.int32()), pa.array(values[::-1]))
        for chunks in ([plain, dictionary.cast(pa.int64()), pa.array([None], pa.int64())],
                       [pc.dictionary_encode(plain), dictionary,
                        pa.DictionaryArray.from_arrays(pa.array([None], pa.int32()),
                                                       pa.array([], pa.int64()))]):
            _check_flat(encode(pa.chunked_array(chunks)), distinct)


def _check_flat(enc: Encoded, distinct: int) -> None:
    assert enc.codes.dtype == (np.uint8 if distinct < 255 else
                               np.uint16 if distinct < 65535 else np.uint32)
    assert enc.cardinality == distinct + 1
    codes = enc.codes.tolist()
    assert codes[distinct] == codes[distinct + 3] == codes[-1] == 0  # nulls
    assert codes[distinct + 1] == codes[0] == codes[distinct + 4]  # 0 in either chunk
    assert codes[distinct + 2] == codes[distinct - 1]
    assert len(set(codes[:distinct])) == distinct and 0 not in codes[:distinct]


def test_no_rows_in_several_columns() -> None:
    columns = [pa.array([], type=LABELS), pa.array([], type=pa.string()),
               pa.array([], type=pa.int32())]
    gid, reps = factorize([encode(c) for c in columns])
    assert len(gid) == 0 and len(reps) == 0
