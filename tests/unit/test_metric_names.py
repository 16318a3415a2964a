"""One flattening of nested results into MLflow metric names, for evaluate and the monitor."""

from __future__ import annotations

import math

from recommender.core.metric_names import flat_metrics, metric_name


def test_names_mlflow_accepts() -> None:
    assert metric_name("ranking_ndcg@10") == "ranking_ndcg_at_10"
    assert (
        metric_name("slices_user_train_ratings_21+_rmse")
        == "slices_user_train_ratings_21_plus_rmse"
    )
    assert metric_name("slices_1-5_rows") == "slices_1_to_5_rows"
    assert metric_name("odd(name)") == "odd_name_"


def test_numbers_and_booleans_nested_paths_and_nothing_else() -> None:
    result = {
        "test": {"rmse": 0.9, "rows": 10},
        "ranking": {"ndcg@10": 0.4},
        "judged": True,
        "source": "text",
        "bins": [1, 2],
        "missing": None,
        "nan": math.nan,
    }
    assert flat_metrics(result) == {
        "test_rmse": 0.9,
        "test_rows": 10.0,
        "ranking_ndcg_at_10": 0.4,
        "judged": 1.0,
    }
    assert flat_metrics({"psi": 0.1}, "drift") == {"drift_psi": 0.1}
