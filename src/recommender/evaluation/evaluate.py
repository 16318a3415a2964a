"""Offline evaluation on the test split: rating error, ranking quality, baselines and slices.

Everything is computed on the same test rows, in one pass: the model through
:class:`~recommender.scoring.bundle.ModelBundle` (the code the service runs), the baselines
fitted on the same train rows. Nothing here chooses anything; the test split only measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recommender.core import memory
from recommender.core.config import EvaluateConfig
from recommender.core.metric_names import flat_metrics
from recommender.dataset.processed import Processed, with_val_in_train
from recommender.evaluation.baselines import EASE, BiasBaseline, GlobalMean
from recommender.scoring import metrics
from recommender.scoring.bundle import ModelBundle
from recommender.scoring.ranking import MAX_BLOCK_CELLS, SeenItems, rank


@dataclass
class Evaluation:
    """The metrics (``metrics.json``'s content) and per-row predictions (for plots)."""

    metrics: dict[str, Any]
    #: One row per test rating: user_idx, item_idx, rating, prediction, bias_prediction,
    #: train_count (the user's train ratings), unknown (user or item unseen in train).
    rows: pd.DataFrame


def rating_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE (the tutorial's metric), RMSE and MAE."""
    return {
        "mse": metrics.mse(y_true, y_pred),
        "rmse": metrics.rmse(y_true, y_pred),
        "mae": metrics.mae(y_true, y_pred),
    }


def activity_slices(bins: list[int]) -> list[tuple[str, int, float]]:
    """Slice names and [low, high) bounds of train-rating counts: bins [1, 6, 21] give
    ``0``, ``1-5``, ``6-20`` and ``21+``."""
    edges = [0, *bins]
    slices = []
    for low, high in zip(edges, [*bins, np.inf], strict=True):
        if high == low + 1:
            name = str(low)
        elif np.isinf(high):
            name = f"{low}+"
        else:
            name = f"{low}-{int(high) - 1}"
        slices.append((name, low, high))
    return slices


def _ranking(
    top_items: np.ndarray, relevant: list[set[int]], k: int, bundle: ModelBundle
) -> dict[str, float]:
    report = metrics.ranking_report(
        top_items,
        relevant,
        k,
        n_items=bundle.n_items,
        popularity=bundle.popularity,
        n_train_users=bundle.n_users,
    )
    # metrics.json's keys read like the literature: precision@10, ndcg@10, ...
    return {key.replace(f"_at_{k}", f"@{k}"): value for key, value in report.items()}


def _fit_ease(data: Processed, lam: float, threshold: float) -> EASE:
    train = data.train
    return EASE(lam, threshold).fit(
        train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train["rating"].to_numpy(),
        len(data.user_vocab) - 1, len(data.item_vocab) - 1,
    )  # fmt: skip


def choose_ease_lambda(processed: Processed, cfg: EvaluateConfig) -> tuple[float, dict[str, Any]]:
    """EASE's L2 strength: the best NDCG@k on the validation split (EASE fitted on train alone).

    Without a validation split nothing may choose it (never the test split): the middle of
    ``cfg.ease_lambdas`` is used and the record says so.
    """
    lambdas = sorted(cfg.ease_lambdas)
    val = processed.val
    if not len(val):
        lam = lambdas[len(lambdas) // 2]
        return lam, {"lambda": lam, "chosen_on": "nothing (no validation split): the middle value"}
    users = np.unique(val["user_idx"].to_numpy())
    users = users[users > 0]
    relevant = metrics.relevant_sets(val, users, cfg.relevance_threshold)
    train = processed.train
    seen = SeenItems(
        train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), len(processed.user_vocab) - 1
    )
    n_cols = len(processed.item_vocab)
    by_lambda = {}
    first = _fit_ease(processed, lambdas[0], cfg.relevance_threshold)
    for lam in lambdas:
        ease = first if lam == lambdas[0] else first.with_lambda(lam)  # one Gram matrix
        top = rank(ease.score, users, cfg.k, n_cols, seen=seen).items
        by_lambda[lam] = metrics.ndcg_at_k(top, relevant, cfg.k)
    best = max(lambdas, key=lambda lam: (by_lambda[lam], -lam))
    record = {f"val_ndcg@{cfg.k}": {str(lam): by_lambda[lam] for lam in lambdas}}
    return best, {"lambda": best, "chosen_on": "validation split", **record}


def evaluate(bundle: ModelBundle, processed: Processed, cfg: EvaluateConfig) -> Evaluation:
    """Score the test split with the model and the baselines; rank for every test user."""
    original = processed
    if bundle.meta.get("refit_train_rows"):  # the model learnt from train + val: so do these
        processed = with_val_in_train(processed)
    train, test = processed.train, processed.test
    u_train, i_train = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
    r_train = train["rating"].to_numpy(dtype=np.float64)
    u, i = test["user_idx"].to_numpy(), test["item_idx"].to_numpy()
    y = test["rating"].to_numpy(dtype=np.float64)
    memory.check(
        evaluate_estimate(
            bundle.n_users, bundle.n_items, len(train), len(test),
            [f.user_vectors.shape[1] for f in (bundle.factors, bundle.retrieval) if f],
            MAX_BLOCK_CELLS,
            bundle.n_items if bundle.n_items <= cfg.ease_max_items else None,
            uses_tensorflow=bundle.factors is None,  # factor families score without Keras
        )
    )  # fmt: skip

    prediction = bundle.predict(u, i).astype(np.float64)
    scale = processed.info.rating_scale
    global_mean = GlobalMean().fit(u_train, i_train, r_train)
    bias = BiasBaseline(scale=scale).fit(
        u_train, i_train, r_train, n_users=bundle.n_users, n_items=bundle.n_items
    )
    bias_prediction = bias.predict(u, i)

    # Ranking: every test user, candidates = every known item they did not rate in train;
    # relevant = their test items rated >= the threshold. Cold test items (index 0) cannot be
    # recommended, so they are left out of the relevant sets.
    k = cfg.k
    users = np.unique(u)
    relevant = metrics.relevant_sets(test, users, cfg.relevance_threshold)
    model_top = bundle.recommend(users, k).items
    popular_top = bundle.popular(users, k).items
    if bundle.n_items <= cfg.ease_max_items:
        lam, ease_record = choose_ease_lambda(original, cfg)
        ease = _fit_ease(processed, lam, cfg.relevance_threshold)
        ease_top = rank(ease.score, users, k, bundle.n_items + 1, seen=bundle.seen).items
        ease_metrics = {**_ranking(ease_top, relevant, k, bundle), **ease_record}
    else:
        ease_metrics = {
            "skipped": f"{bundle.n_items} items > evaluate.ease_max_items ({cfg.ease_max_items})"
        }

    train_count = np.bincount(u_train, minlength=bundle.n_users + 1)
    rows = pd.DataFrame(
        {
            "user_idx": u,
            "item_idx": i,
            "rating": y,
            "prediction": prediction,
            "bias_prediction": bias_prediction,
            "train_count": np.where(u > 0, train_count[u], 0),
            "unknown": (u == 0) | (i == 0),
        }
    )
    slices: dict[str, Any] = {"user_train_ratings": {}}
    for name, low, high in activity_slices(cfg.activity_bins):
        part = rows[(rows["train_count"] >= low) & (rows["train_count"] < high)]
        slices["user_train_ratings"][name] = _slice(part)
    slices["unknown_user_or_item"] = _slice(rows[rows["unknown"]])
    slices["known_user_and_item"] = _slice(rows[~rows["unknown"]])

    result = {
        "model": bundle.meta.get("model", bundle.meta.get("family")),
        "test": {**rating_metrics(y, prediction), "rows": int(len(y))},
        "baselines": {
            "global_mean": rating_metrics(y, global_mean.predict(u, i)),
            "bias": rating_metrics(y, bias_prediction),
            "popularity": _ranking(popular_top, relevant, k, bundle),
            "ease": ease_metrics,
        },
        "ranking": _ranking(model_top, relevant, k, bundle),
        "slices": slices,
    }
    return Evaluation(_rounded(result), rows)


def _slice(part: pd.DataFrame) -> dict[str, float | int]:
    if part.empty:
        return {"rows": 0}
    y = part["rating"].to_numpy()
    return {
        "rows": int(len(part)),
        "rmse": metrics.rmse(y, part["prediction"].to_numpy()),
        "mae": metrics.mae(y, part["prediction"].to_numpy()),
        "bias_rmse": metrics.rmse(y, part["bias_prediction"].to_numpy()),
    }


def _rounded(value: Any) -> Any:
    """Round floats to 6 places so metrics.json diffs show real changes, not float noise."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def mlflow_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flatten ``metrics.json`` into MLflow metric names (``test_rmse``, ``ranking_ndcg_at_10``)."""
    return flat_metrics(result)


#: Bytes per score cell while ranking a block of users (float32 scores, their float64 copy,
#: the negated copy and argpartition's int64 indices).
RANK_BYTES_PER_CELL = 32


def evaluate_estimate(
    n_users: int,
    n_items: int,
    n_train: int,
    n_test: int,
    factor_dims: Sequence[int],
    block_cells: int,
    ease_items: int | None,
    uses_tensorflow: bool = True,
) -> memory.Estimate:
    """The evaluate stage's peak.

    - the model's exported factors: (n_users + n_items + 2) x each factor set's width x 4 B;
    - ranking: one block of users x items scores (``block_cells``, at least one user's row)
      x :data:`RANK_BYTES_PER_CELL`, for the model and again for each baseline's block;
    - EASE, when it runs (``ease_items``): its item x item Gram matrix, the copy the inversion
      works on, the inverse and the weights, float64 (4 x ``(ease_items + 1)^2`` x 8 B);
    - the train rows' seen-item index (16 B each) and the test rows' table (64 B each);
    - TensorFlow itself (:data:`~recommender.core.memory.TENSORFLOW_RUNTIME_BYTES`), unless
      already imported or the model scores from its exported factors alone
      (``uses_tensorflow=False``: Keras is never loaded).
    """
    rows = n_users + n_items + 2
    cells = max(block_cells, n_items + 1)
    parts = [
        memory.Part(f"factors {rows:,} x {sum(factor_dims)} x 4 B", rows * sum(factor_dims) * 4),
        memory.Part(
            f"ranking blocks of {cells:,} scores x {RANK_BYTES_PER_CELL} B x 2",
            cells * RANK_BYTES_PER_CELL * 2,
        ),
        memory.Part(
            f"seen items {n_train:,} x 16 B + test rows {n_test:,} x 64 B",
            n_train * 16 + n_test * 64,
        ),
    ]
    advice = []
    if ease_items is not None:
        side = ease_items + 1
        parts.append(
            memory.Part(
                f"EASE item x item matrices 4 x {side:,} x {side:,} x 8 B", 4 * side * side * 8
            )
        )
        advice.append(
            f"a smaller evaluate.ease_max_items (below {ease_items:,} skips the EASE baseline)"
        )
    if uses_tensorflow:
        parts.append(memory.tensorflow_part())
    return memory.Estimate("evaluate", tuple(parts), tuple(advice))
