"""A processed split read from its Parquet files in pieces: training on more rows than fit in
memory.

The preprocess stage writes each split as a Parquet file (pandas) or a folder of part files
(Spark). :class:`ParquetRatings` walks its row groups in a seeded order per epoch, gathers them
into windows of at least ``window_rows`` rows, permutes each window and cuts it into batches, so
a training process holds one window of ``(user_idx, item_idx, rating)``, never the split: 12
bytes a row of the window (1M rows: 12 MB), where the in-memory path keeps every row.

The order is random at two levels (row groups, rows within a window), not one permutation of
all rows as :func:`recommender.training.loop.shard_batches` draws: a batch's rows come from one
window's row groups. Spark's parts hold ratings in the interim order (user by user for the
synthetic source), so a window covers a range of users: the windows should hold many row
groups (``window_rows`` well above a row group's rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.io import parquet_parts

#: What the training loop reads of a split.
COLUMNS = ("user_idx", "item_idx", "rating")
_DTYPES = (np.int32, np.int32, np.float32)


@dataclass(frozen=True)
class Piece:
    """One row group of one Parquet file."""

    path: Path
    row_group: int
    rows: int


class ParquetRatings:
    """The ``(user_idx, item_idx, rating)`` rows of a processed split, read piece by piece.

    ``len()`` is the number of rows (from the files' footers, no data read).
    """

    def __init__(self, path: str | Path, window_rows: int = 4_000_000) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.window_rows = window_rows
        self.pieces: list[Piece] = []
        for file in parquet_parts(path):
            meta = pq.read_metadata(file)
            self.pieces += [
                Piece(file, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
            ]
        self._rows = sum(p.rows for p in self.pieces)

    def __len__(self) -> int:
        return self._rows

    def read(self, piece: Piece, columns: tuple[str, ...] = COLUMNS) -> list[np.ndarray]:
        """One piece's ``columns`` as NumPy arrays (the loop's dtypes for :data:`COLUMNS`)."""
        import pyarrow.parquet as pq

        table = pq.ParquetFile(piece.path).read_row_group(piece.row_group, columns=list(columns))
        dtypes = dict(zip(COLUMNS, _DTYPES, strict=True))
        return [table.column(c).to_numpy().astype(dtypes.get(c), copy=False) for c in columns]

    def windows(self, seed: int, epoch: int) -> Iterator[list[np.ndarray]]:
        """Every row once, in windows of at least ``window_rows`` rows (the last may be smaller):
        pieces in an order keyed by ``(seed, epoch)``, each window's rows permuted."""
        rng = np.random.default_rng([seed, epoch])
        held: list[list[np.ndarray]] = []
        held_rows = 0
        for i in rng.permutation(len(self.pieces)):
            held.append(self.read(self.pieces[i]))
            held_rows += self.pieces[i].rows
            if held_rows >= self.window_rows:
                yield _permuted(held, rng)
                held, held_rows = [], 0
        if held:
            yield _permuted(held, rng)

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[list[np.ndarray]]:
        """One epoch's batches of ``batch_size`` rows (the last one smaller), as
        ``[users, items, ratings]``; a window's remainder opens the next window's first batch."""
        carry: list[np.ndarray] | None = None
        for window in self.windows(seed, epoch):
            if carry is not None:
                window = [np.concatenate([c, w]) for c, w in zip(carry, window, strict=True)]
            n = len(window[0])
            whole = n - n % batch_size
            for lo in range(0, whole, batch_size):
                yield [a[lo : lo + batch_size] for a in window]
            carry = [a[whole:] for a in window]
        if carry is not None and len(carry[0]):
            yield carry

    def dataset(self, batch_size: int, epochs: int, seed: int) -> Any:
        """``tf.data`` of ``({"user", "item"}, rating, share)`` for ``epochs`` epochs, the
        elements the training loop's steps take (one replica: the whole batch, share 1)."""
        import tensorflow as tf

        def generate() -> Iterator[tuple[np.ndarray, ...]]:
            for epoch in range(epochs):
                yield from (tuple(b) for b in self.batches(batch_size, seed, epoch))

        signature = tuple(tf.TensorSpec([None], tf.as_dtype(d)) for d in _DTYPES)
        ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return ds.map(lambda u, i, r: ({"user": u, "item": i}, r, tf.constant(1.0)))


def _permuted(held: list[list[np.ndarray]], rng: np.random.Generator) -> list[np.ndarray]:
    columns = [np.concatenate(parts) for parts in zip(*held, strict=True)]
    order = rng.permutation(len(columns[0]))
    return [c[order] for c in columns]
