import json
from pathlib import Path

from recommender.summary import summarize


def test_summary_reports_the_headline_figures(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {
                "model": "two_tower",
                "test": {"rmse": 0.9, "mae": 0.7, "mse": 0.81},
                "baselines": {
                    "bias": {"rmse": 0.95},
                    "global_mean": {"rmse": 1.1},
                    "popularity": {"ndcg@10": 0.3, "coverage@10": 0.04},
                    "ease": {"skipped": "too many items"},
                },
                "ranking": {"ndcg@10": 0.4, "coverage@10": 0.2},
            }
        )
    )
    (tmp_path / "package.json").write_text(json.dumps({"packaged": False, "reason": "no champion"}))
    text = summarize(tmp_path)
    assert "test RMSE 0.9000" in text and "bias baseline RMSE 0.9500" in text
    assert "NDCG@10 0.4000 (coverage 0.200); popularity 0.3000 (coverage 0.040)" in text
    assert "EASE skipped (too many items)" in text
    assert "nothing packaged: no champion" in text
    assert "registry" not in text  # no promotion.json: that line is left out, not invented
