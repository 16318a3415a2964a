"""The preprocess stage's work: split the ratings, encode ids, featurize items and users.

Vocabularies come from the train rows only (what the model learns from), so val/test ids never
seen in training encode to 0, exactly as unknown ids will at serving time; they are counted in the
summary, never dropped. The output folder is described in :mod:`recommender.dataset.processed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.config import PreprocessConfig
from recommender.core.errors import ConfigError, DataError
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
    Dataset,
    DatasetInfo,
    read_dataset,
)
from recommender.dataset.features import FeatureSpec, catalog_items, catalog_users
from recommender.dataset.processed import Processed
from recommender.dataset.vocabulary import Vocabulary
from recommender.preprocess.hashsplit import unit_values, val_bound

# --- splits -------------------------------------------------------------------------------------


def _latest(ts: np.ndarray, fraction: float) -> tuple[int, np.ndarray]:
    """A time cut leaving about ``fraction`` of rows strictly after it; ties stay before.

    Returns the cut timestamp and the mask of rows after it.
    """
    cut = int(np.sort(ts)[latest_row(len(ts), fraction) - 1])
    return cut, ts > cut


# --- what a split refuses (both engines raise the same errors) ----------------------------------


def temporal_error(cut: int) -> ConfigError:
    return ConfigError(
        f"preprocess.split is 'temporal' but no rating is later than the cut ({cut}): the "
        "timestamps are (nearly) all equal, e.g. a file without timestamps; use "
        "split: random or leave_last_n"
    )


def given_missing_error(info: DatasetInfo) -> ConfigError:
    return ConfigError(
        f"preprocess.split is 'given' but the ratings of source {info.source!r} have no "
        f"'{GIVEN_SPLIT}' column: this source has no canonical train/test split. "
        "MovieLens-100K has one (u1..u5, ua, ub: choose it with ingest.ml100k_fold); for a "
        "csv source, set csv.test_path to your test file; otherwise use split: random, "
        "temporal or leave_last_n"
    )


def given_value_error(path: str, value: Any, row: int) -> DataError:
    """``row`` is 0-based."""
    return DataError(
        path,
        f"given_split is {value!r}",
        row=row + 1,
        column=GIVEN_SPLIT,
        expected="'train' or 'test'",
    )


def given_one_sided_error(path: str, side: str) -> DataError:
    return DataError(
        path,
        f"every row has given_split {side!r}",
        column=GIVEN_SPLIT,
        expected="both train and test rows",
    )


def null_error(path: str, column: str, row: int) -> DataError:
    """``row`` is 0-based."""
    return DataError(path, "null value", row=row + 1, column=column, expected="no nulls")


def duplicate_error(path: str, n_rows: int, pair: tuple[Any, Any], row: int) -> DataError:
    """``n_rows`` rows repeat a pair; the first of them is ``row`` (0-based), holding ``pair``."""
    u, i = (v.item() if isinstance(v, np.generic) else v for v in pair)
    return DataError(
        path,
        f"{n_rows} rows repeat a (user_id, item_id) pair, e.g. ({u!r}, {i!r})",
        row=row + 1,
        expected="one rating per pair (set ingest.duplicates to keep_first, keep_last or mean)",
    )


def empty_side_error(path: str, n: int, side: str, cfg: PreprocessConfig) -> DataError:
    """A hash split of very few ratings can leave a side empty: say so instead of training on
    nothing."""
    return DataError(
        path,
        f"{n} ratings leave the {side} split empty under preprocess.split {cfg.split!r} "
        f"(test_fraction {cfg.test_fraction}, val_fraction {cfg.val_fraction})",
        expected="enough ratings for every split (validate.min_ratings guards this)",
    )


def latest_row(n: int, fraction: float) -> int:
    """The 1-based position, in timestamp order, of the temporal cut (see :func:`_latest`)."""
    return max(n - round(fraction * n), 1)


def _test_mask(
    ratings: pd.DataFrame,
    cfg: PreprocessConfig,
    unit: np.ndarray,
    info: DatasetInfo,
    path: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which rows are test rows under ``cfg.split``, and split facts for the summary."""
    n = len(ratings)
    if cfg.split == "random":
        return unit < cfg.test_fraction, {}
    if cfg.split == "temporal":
        cut, after = _latest(ratings[TIMESTAMP].to_numpy(), cfg.test_fraction)
        if not after.any():
            raise temporal_error(cut)
        return after, {"temporal_cut": cut}
    if cfg.split == "leave_last_n":
        # Sorting by item id too breaks timestamp ties the same way whatever the row order.
        order = ratings.sort_values([USER, TIMESTAMP, ITEM], kind="stable")
        from_end = order.groupby(USER, sort=False).cumcount(ascending=False).to_numpy()
        per_user = order.groupby(USER, sort=False)[USER].transform("size").to_numpy()
        in_test = from_end < np.minimum(cfg.n_last, per_user - 1)
        mask = np.zeros(n, dtype=bool)
        mask[order.index.to_numpy()[in_test]] = True
        return mask, {"n_last": cfg.n_last}
    # split == "given"
    if GIVEN_SPLIT not in ratings.columns:
        raise given_missing_error(info)
    given = ratings[GIVEN_SPLIT]
    bad = ~given.isin(["train", "test"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise given_value_error(path, given.iloc[row], row)
    mask = (given == "test").to_numpy()
    if not mask.any() or mask.all():
        raise given_one_sided_error(path, "train" if not mask.any() else "test")
    return mask, {}


def _val_mask(
    ratings: pd.DataFrame, test: np.ndarray, cfg: PreprocessConfig, unit: np.ndarray
) -> np.ndarray:
    """Carve validation rows out of the non-test rows (never out of test)."""
    rest = np.flatnonzero(~test)
    val = np.zeros(len(ratings), dtype=bool)
    if cfg.val_fraction == 0 or len(rest) < 2:
        return val
    if cfg.split == "temporal":
        # Validate on the most recent training period, as the test split does on the next one.
        _, after = _latest(ratings[TIMESTAMP].to_numpy()[rest], cfg.val_fraction)
        val[rest[after]] = True
    elif cfg.split == "random":
        # The same hash value: [0, test_fraction) is test, the next band validation.
        val = ~test & (unit < val_bound(cfg.test_fraction, cfg.val_fraction))
    else:
        val = ~test & (unit < cfg.val_fraction)
    return val


def _check_sides(train: np.ndarray, test: np.ndarray, cfg: PreprocessConfig, path: str) -> None:
    for name, mask in (("train", train), ("test", test)):
        if not mask.any():
            raise empty_side_error(path, len(mask), name, cfg)


# --- the stage ----------------------------------------------------------------------------------


def _check_ratings(ratings: pd.DataFrame, path: str) -> None:
    """Refuse what would break the split invariants (validate should have stopped it already)."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}", expected=f"columns {RATING_COLUMNS}")
    if len(ratings) < 2:
        raise DataError(path, f"{len(ratings)} rating(s)", expected="at least 2 to split")
    for col in (USER, ITEM, TIMESTAMP):
        nulls = ratings[col].isna().to_numpy()
        if nulls.any():
            raise null_error(path, col, int(np.flatnonzero(nulls)[0]))
    # A (user, item) pair rated twice could land in train and test: a leak no split can prevent.
    dup = ratings.duplicated([USER, ITEM], keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        pair = (ratings[USER].iloc[first], ratings[ITEM].iloc[first])
        raise duplicate_error(path, int(dup.sum()), pair, first)


def _encode(part: pd.DataFrame, users: Vocabulary, items: Vocabulary) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_idx": users.encode(part[USER]),
            "item_idx": items.encode(part[ITEM]),
            RATING: part[RATING].to_numpy(dtype=np.float32),
            TIMESTAMP: part[TIMESTAMP].to_numpy(dtype=np.int64),
            USER: part[USER].to_numpy(),
            ITEM: part[ITEM].to_numpy(),
        }
    )


def _cold(part: pd.DataFrame) -> dict[str, int]:
    """Rows (and distinct ids) of ``part`` whose user or item has no training row."""
    cold_user, cold_item = part["user_idx"] == 0, part["item_idx"] == 0
    return {
        "unknown_user_rows": int(cold_user.sum()),
        "unknown_item_rows": int(cold_item.sum()),
        "unknown_either_rows": int((cold_user | cold_item).sum()),
        "cold_users": int(part.loc[cold_user, USER].nunique()),
        "cold_items": int(part.loc[cold_item, ITEM].nunique()),
    }


def preprocess(
    dataset: Dataset,
    cfg: PreprocessConfig,
    seed: int,
    *,
    ratings_path: str | Path = "ratings.parquet",
) -> Processed:
    """Split, encode and featurize a canonical dataset.

    Args:
        dataset: Canonical tables from the ingest stage.
        cfg: ``params.preprocess``.
        seed: ``params.seed``; the random split (and the validation rows of every split but
            ``temporal``) is a hash of (seed, user_id, item_id): :mod:`.hashsplit`.
        ratings_path: Named in error messages about the ratings.

    Raises:
        ConfigError: ``split: given`` on a source without a given split, or ``temporal`` on
            timestamps that cannot be cut.
        DataError: Ratings that would break the split invariants (nulls, repeated pairs).
    """
    ratings = dataset.ratings.reset_index(drop=True)
    _check_ratings(ratings, str(ratings_path))
    unit = unit_values(ratings[USER], ratings[ITEM], seed)
    test, facts = _test_mask(ratings, cfg, unit, dataset.info, str(ratings_path))
    val = _val_mask(ratings, test, cfg, unit)
    train = ~test & ~val
    _check_sides(train, test, cfg, str(ratings_path))

    user_vocab = Vocabulary.from_ids(ratings.loc[train, USER])
    item_vocab = Vocabulary.from_ids(ratings.loc[train, ITEM])
    parts = {
        name: _encode(ratings.loc[mask], user_vocab, item_vocab)
        for name, mask in (("train", train), ("val", val), ("test", test))
    }
    rows = {name: len(part) for name, part in parts.items()} | {"total": len(ratings)}
    split_facts = {"split": cfg.split, "seed": seed, "rows": rows, **facts}
    split_facts |= {"test": _cold(parts["test"]), "val": _cold(parts["val"])}
    rated = (ratings[USER].drop_duplicates(), ratings[ITEM].drop_duplicates())
    return featurized(dataset, rated, (user_vocab, item_vocab), split_facts, parts)


def featurized(
    dataset: Dataset,
    rated: tuple[pd.Series, pd.Series],
    vocabularies: tuple[Vocabulary, Vocabulary],
    split_facts: dict[str, Any],
    parts: dict[str, pd.DataFrame],
) -> Processed:
    """The catalog, the item and user features and the summary, around the split ``parts``.

    Catalog-sized work, shared by both engines: ``rated`` holds the distinct user and item ids
    of every rating, ``split_facts`` the split's rows, cold counts and facts.
    """
    user_vocab, item_vocab = vocabularies
    rated_users, rated_items = rated
    spec = FeatureSpec.fit(dataset.items, dataset.users)
    catalog = catalog_items(dataset.items, rated_items)
    catalog.insert(1, "item_idx", item_vocab.encode(catalog[ITEM]))
    items = spec.encode_items(catalog)
    items.insert(1, "item_idx", catalog["item_idx"].to_numpy())
    if dataset.users is not None:
        users = spec.encode_users(catalog_users(dataset.users, rated_users))
        users.insert(1, "user_idx", user_vocab.encode(users[USER]))
    else:
        users = pd.DataFrame(
            {
                USER: pd.Series([], dtype=rated_users.dtype),
                "user_idx": pd.Series([], dtype="int32"),
            }
        )

    n_users, n_items = len(user_vocab) - 1, len(item_vocab) - 1
    facts = dict(split_facts)
    summary: dict[str, Any] = {
        "split": facts.pop("split"),
        "seed": facts.pop("seed"),
        "rows": facts.pop("rows"),
        "n_users": n_users,
        "n_items": n_items,
        "catalog_items": len(items),
        "cold_catalog_items": int((items["item_idx"] == 0).sum()),
        "density": round(split_facts["rows"]["train"] / (n_users * n_items), 6),
        "test": facts.pop("test"),
        "val": facts.pop("val"),
        **facts,
    }
    return Processed(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        item_features=items,
        user_features=users,
        feature_spec=spec,
        info=dataset.info,
        catalog=catalog,
        summary=summary,
    )


def require_interim(in_dir: str | Path) -> None:
    """A clear error when the ingest stage's folder lacks a file."""
    for name in ("dataset.json", "ratings.parquet", "items.parquet"):
        if not (Path(in_dir) / name).exists():
            raise DataError(Path(in_dir) / name, "missing", expected="the ingest stage's output")


def read_interim(in_dir: str | Path) -> Dataset:
    """Read the ingest stage's folder, with a clear error when it is missing."""
    require_interim(in_dir)
    return read_dataset(in_dir)
