"""policy.keys: exact row equality, columnar — including the cases a hash alone gets wrong."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
