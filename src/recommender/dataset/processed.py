"""The preprocess stage's output folder: the contract train, evaluate and serve rely on.

- ``train.parquet``, ``val.parquet``, ``test.parquet``: ``user_idx``, ``item_idx`` (int32),
  ``rating`` (float32), ``timestamp`` (int64), ``user_id``, ``item_id`` (raw ids).
- ``vocab.json``: ``{"user": [null, id1, ...], "item": [null, ...]}``; position = index, 0 = OOV.
- ``item_features.parquet``, ``user_features.parquet``, ``features.json``: see
  :mod:`recommender.dataset.features`.
- ``dataset.json``: the interim :class:`~recommender.core.schema.DatasetInfo`, copied.
- ``items.parquet``: the catalog (every item, rated or not, with its index; 0 = never rated).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from recommender.core.errors import DataError
from recommender.core.io import staged_dir, write_json
from recommender.core.schema import DatasetInfo
from recommender.dataset.features import FeatureSpec
from recommender.dataset.vocabulary import Vocabulary, load_vocabularies

SPLITS = ("train", "val", "test")
FILES = (
    "train.parquet",
    "val.parquet",
    "test.parquet",
    "vocab.json",
    "item_features.parquet",
    "user_features.parquet",
    "features.json",
    "dataset.json",
    "items.parquet",
)


@dataclass
class Processed:
    """Everything the preprocess stage produces (see the module docstring for the files)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    item_features: pd.DataFrame
    user_features: pd.DataFrame
    feature_spec: FeatureSpec
    info: DatasetInfo
    #: Every catalog item: ``item_id``, ``item_idx`` (0 = cold), ``title``, ``genres``, ``year``.
    catalog: pd.DataFrame
    #: The stage's metrics; ``None`` when loaded from disk (it lives in the ``--summary`` file).
    summary: dict[str, Any] | None = None


def with_val_in_train(processed: Processed) -> Processed:
    """``processed`` with the validation rows moved into train, for the final refit.

    The vocabularies come from train alone, so a validation row whose user or item is unknown
    to them (index 0) is left out: the model has no row to learn for it.
    """
    val = processed.val
    known = (val["user_idx"] != 0) & (val["item_idx"] != 0)
    train = pd.concat([processed.train, val[known]], ignore_index=True)
    return replace(processed, train=train, val=val.iloc[:0])


def write_processed(
    processed: Processed,
    out_dir: str | Path,
    summary_path: str | Path | None = None,
    *,
    write_splits: Callable[[Path], None] | None = None,
) -> None:
    """Write the output folder atomically, then the summary metric (when a path is given).

    ``write_splits`` writes ``<name>.parquet`` for each of :data:`SPLITS` into the staged folder
    it is given, instead of ``processed``'s frames (Spark writes them as folders of parts, which
    every reader here reads as one table).
    """
    with staged_dir(out_dir) as tmp:
        if write_splits is not None:
            write_splits(tmp)
        else:
            for name in SPLITS:
                getattr(processed, name).to_parquet(tmp / f"{name}.parquet", index=False)
        vocab = {"user": processed.user_vocab.to_json(), "item": processed.item_vocab.to_json()}
        (tmp / "vocab.json").write_text(json.dumps(vocab, indent=2) + "\n")
        processed.item_features.to_parquet(tmp / "item_features.parquet", index=False)
        processed.user_features.to_parquet(tmp / "user_features.parquet", index=False)
        spec = processed.feature_spec.to_json()
        (tmp / "features.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        (tmp / "dataset.json").write_text(processed.info.to_json())
        processed.catalog.to_parquet(tmp / "items.parquet", index=False)
    if summary_path is not None and processed.summary is not None:
        write_json(processed.summary, summary_path)


def load_processed(out_dir: str | Path) -> Processed:
    """Read what :func:`write_processed` wrote (``summary`` is ``None``)."""
    out_dir = Path(out_dir)
    for name in FILES:
        if not (out_dir / name).exists():
            raise DataError(out_dir / name, "missing", expected="the preprocess stage's output")
    user_vocab, item_vocab = load_vocabularies(out_dir / "vocab.json")
    return Processed(
        train=pd.read_parquet(out_dir / "train.parquet"),
        val=pd.read_parquet(out_dir / "val.parquet"),
        test=pd.read_parquet(out_dir / "test.parquet"),
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        item_features=pd.read_parquet(out_dir / "item_features.parquet"),
        user_features=pd.read_parquet(out_dir / "user_features.parquet"),
        feature_spec=FeatureSpec.from_json(json.loads((out_dir / "features.json").read_text())),
        info=DatasetInfo.read(out_dir / "dataset.json"),
        catalog=pd.read_parquet(out_dir / "items.parquet"),
    )
