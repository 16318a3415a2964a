"""The hash behind the random split: XXH64 as published, and Spark's chaining of it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.preprocess.hashsplit import hash_bytes, hash_long, unit_values


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [
        (b"", 0, 0xEF46DB3751D8E999),
        (b"abc", 0, 0x44BC2CF5AD770999),
        (b"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1),
    ],
)
def test_hash_bytes_matches_the_reference_xxh64(data, seed, expected):
    assert hash_bytes(data, seed) == expected


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -(2**63), 12_345_678_901])
def test_hash_long_is_xxh64_of_the_little_endian_bytes(value):
    as_bytes = int(value).to_bytes(8, "little", signed=True)
    assert int(hash_long(value, 7)) == hash_bytes(as_bytes, 7)


def test_unit_values_are_uniform_and_keyed_by_ids_and_seed():
    users, items = np.arange(200_000) % 1000, np.arange(200_000) // 1000
    u = unit_values(users, items, 42)
    assert u.min() >= 0 and u.max() < 1
    assert abs((u < 0.2).mean() - 0.2) < 0.005
    assert not np.array_equal(u, unit_values(users, items, 43))
    # The same ratings in another order get the same values.
    order = np.random.default_rng(0).permutation(len(u))
    assert np.array_equal(unit_values(users[order], items[order], 42), u[order])


def test_text_ids_hash_their_utf8_bytes_once_per_distinct_id():
    users = pd.Series(["u1", "u2", "u1", "ü3"], dtype="str")
    items = pd.Series(["a", "a", "b", "a"], dtype="str")
    u = unit_values(users, items, 42)
    assert len(set(u.tolist())) == 4
    assert unit_values(users.iloc[[2]], items.iloc[[2]], 42)[0] == u[2]
