"""Processed splits read from Parquet a window at a time (``dataset/stream.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender.core.errors import DataError
from recommender.dataset.stream import ParquetRatings


def write_parts(folder: Path, sizes: list[int], row_group: int = 300) -> int:
    """Part files of ``sizes`` rows (rating = the row's global number), as Spark lays them out."""
    folder.mkdir()
    start = 0
    for k, n in enumerate(sizes):
        rows = np.arange(start, start + n)
        table = pa.table(
            {
                "user_idx": (rows % 97 + 1).astype(np.int32),
                "item_idx": (rows % 89 + 1).astype(np.int32),
                "rating": rows.astype(np.float32),
                "timestamp": rows.astype(np.int64),
            }
        )
        pq.write_table(table, folder / f"part-{k:05d}.parquet", row_group_size=row_group)
        start += n
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_bytes(b"x")
    return start


def epoch_rows(stream: ParquetRatings, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    return [b[2] for b in stream.batches(batch, seed, epoch)]


def test_an_epoch_gives_every_row_once_in_full_batches_and_a_last_smaller_one(tmp_path: Path):
    n = write_parts(tmp_path / "train.parquet", [1000, 2500, 37])
    stream = ParquetRatings(tmp_path / "train.parquet", window_rows=700)
    assert len(stream) == n and len(stream.pieces) == 4 + 9 + 1
    batches = epoch_rows(stream, 256, seed=1, epoch=0)
    assert [len(b) for b in batches[:-1]] == [256] * (len(batches) - 1)
    assert len(batches) == -(-n // 256)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))


def test_epochs_are_shuffled_by_seed_and_epoch_and_repeat_for_the_same_key(tmp_path: Path):
    write_parts(tmp_path / "t", [1000, 1000])
    stream = ParquetRatings(tmp_path / "t", window_rows=600)
    first = np.concatenate(epoch_rows(stream, 128, seed=1, epoch=0))
    assert np.array_equal(first, np.concatenate(epoch_rows(stream, 128, seed=1, epoch=0)))
    assert not np.array_equal(first, np.concatenate(epoch_rows(stream, 128, seed=1, epoch=1)))
    assert not np.array_equal(first, np.concatenate(epoch_rows(stream, 128, seed=2, epoch=0)))
    # Rows are mixed within a window, not left in file order.
    assert not np.array_equal(first[:128], np.sort(first[:128]))


def test_columns_come_in_the_loops_dtypes_and_a_single_file_works(tmp_path: Path):
    write_parts(tmp_path / "p", [500])
    stream = ParquetRatings(tmp_path / "p" / "part-00000.parquet")
    users, items, ratings = next(stream.batches(64, 0, 0))
    assert (users.dtype, items.dtype, ratings.dtype) == (np.int32, np.int32, np.float32)


def test_a_missing_split_names_the_path(tmp_path: Path):
    with pytest.raises(DataError, match="nope.parquet"):
        ParquetRatings(tmp_path / "nope.parquet")
