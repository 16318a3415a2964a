"""Helpers that only tests call, moved here from the library (``recommender`` has no caller).

- :func:`item_popularity`: the popularity array :func:`recommender.scoring.metrics.novelty`
  takes, from item indices.
- :func:`save_vocabularies`: the writer matching
  :func:`recommender.dataset.vocabulary.load_vocabularies`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recommender.core.io import write_json
from recommender.dataset.vocabulary import Vocabulary


def item_popularity(item_idx: np.ndarray, n_items: int) -> np.ndarray:
    """Train ratings per item index (``n_items + 1`` entries; entry 0 is the OOV row)."""
    return np.bincount(np.asarray(item_idx, dtype=np.int64), minlength=n_items + 1)


def save_vocabularies(user: Vocabulary, item: Vocabulary, path: str | Path) -> None:
    """Write ``vocab.json`` (atomically)."""
    write_json({"user": user.to_json(), "item": item.to_json()}, path)
