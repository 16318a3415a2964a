"""The random split as a function of the rating itself: a seeded hash of (user_id, item_id).

Which side a rating lands on depends only on its ids and ``seed``, never on the row order or on
which engine reads the rows, so pandas and Spark split a dataset identically (and a rating keeps
its side when others are added). The hash is Spark's own ``xxhash64``:

    hu = xxhash64(seed, user_id)    hi = xxhash64(seed, item_id)    h = xxhash64(hu, hi)
    u = (h >>> 11) * 2**-53         (uniform on [0, 1), exact in float64 in both engines)
    test if u < test_fraction; else val if u < test_fraction + (1 - test_fraction) * val_fraction

:func:`unit_values` computes ``u`` with NumPy (integer ids vectorised, text ids once per distinct
id); :func:`spark_unit_values` is the same expression as a Spark column. The split sizes follow
the fractions up to binomial noise (a 0.2 test fraction of 100,000 ratings: 20,000 +- 130).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import Column

#: Spark's ``xxhash64`` starts its chain of columns from this seed.
SPARK_SEED = 42
_P1, _P2, _P3, _P4, _P5 = (
    0x9E3779B185EBCA87,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0x85EBCA77C2B2AE63,
    0x27D4EB2F165667C5,
)
_M = 2**64 - 1
_U = [np.uint64(p) for p in (_P1, _P2, _P3, _P4, _P5)]


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _avalanche(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= _U[1]
    h ^= h >> np.uint64(29)
    h *= _U[2]
    h ^= h >> np.uint64(32)
    return h


def hash_long(values: Any, seed: Any) -> np.ndarray:
    """XXH64 of each int64 (Spark's ``XXH64.hashLong``) with ``seed`` (scalar or array), uint64."""
    with np.errstate(over="ignore"):
        v = np.asarray(values, dtype=np.int64).view(np.uint64)
        h = np.asarray(seed, dtype=np.uint64) + _U[4] + np.uint64(8)
        h = h ^ (_rotl(v * _U[1], 31) * _U[0])
        h = _rotl(h, 27) * _U[0] + _U[3]
        return _avalanche(h)


def _rotl_int(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return (_rotl_int((acc + lane * _P2) & _M, 31) * _P1) & _M


def hash_bytes(data: bytes, seed: int) -> int:
    """XXH64 of ``data`` with ``seed`` (Spark's ``XXH64.hashUnsafeBytes``: a string's UTF-8)."""
    n, i = len(data), 0
    if n >= 32:
        acc = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while i + 32 <= n:
            for lane in range(4):
                acc[lane] = _round(acc[lane], int.from_bytes(data[i : i + 8], "little"))
                i += 8
        h = sum(_rotl_int(a, r) for a, r in zip(acc, (1, 7, 12, 18), strict=True))
        for a in acc:
            h = ((((h & _M) ^ _round(0, a)) * _P1) + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(data[i : i + 8], "little"))
        h = (_rotl_int(h, 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i : i + 4], "little") * _P1) & _M
        h = (_rotl_int(h, 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _M
        h = (_rotl_int(h, 11) * _P1) & _M
        i += 1
    return int(_avalanche(np.array([h], dtype=np.uint64))[0])


def _id_hashes(ids: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """``xxhash64(seed, id)`` per row: vectorised for integer ids, once per distinct text id."""
    start = hash_long(seed, SPARK_SEED)
    values = pd.Series(ids)
    if pd.api.types.is_integer_dtype(values.dtype):
        return hash_long(values.to_numpy(dtype=np.int64), start)
    codes, distinct = pd.factorize(values)
    table = np.array(
        [hash_bytes(str(v).encode("utf-8"), int(start)) for v in distinct], dtype=np.uint64
    )
    return table[codes]


def unit_values(users: pd.Series | np.ndarray, items: pd.Series | np.ndarray, seed: int):
    """Each rating's ``u`` in [0, 1) (see the module docstring), as float64."""
    user_hash = hash_long(_id_hashes(users, seed).view(np.int64), SPARK_SEED)
    h = hash_long(_id_hashes(items, seed).view(np.int64), user_hash)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def val_bound(test_fraction: float, val_fraction: float) -> float:
    """``u`` below this (and not below ``test_fraction``) is validation."""
    return test_fraction + (1.0 - test_fraction) * val_fraction


def spark_unit_values(seed: int, text_ids: bool, user: str = "user_id", item: str = "item_id"):
    """:func:`unit_values` as a Spark column expression."""
    from pyspark.sql import functions as F

    def id_hash(name: str) -> Column:
        # Spark hashes an int column with hashInt: integer ids go in as longs, as in NumPy.
        col = F.col(name) if text_ids else F.col(name).cast("long")
        return F.xxhash64(F.lit(seed).cast("long"), col)

    h = F.xxhash64(id_hash(user), id_hash(item))
    return F.shiftrightunsigned(h, 11).cast("double") * F.lit(1.0 / 2**53)
