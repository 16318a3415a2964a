"""The memory guard where evaluation runs: a real trained bundle, evaluated under a configured
limit, refuses with the estimate's parts (the scoring blocks, EASE's item x item matrices).

Slow: it trains a small model (TensorFlow); the guard's own tests are in tests/unit/test_memory.py.
"""

from __future__ import annotations

import pytest
from support import tiny_params

from recommender.core import memory

pytestmark = pytest.mark.slow


def test_evaluation_refuses_over_the_limit_and_runs_under_it(processed, monkeypatch) -> None:  # noqa: ANN001
    from recommender.evaluation.evaluate import evaluate
    from recommender.scoring.bundle import ModelBundle
    from recommender.training.fit import fit

    params = tiny_params(train={"model": "biased_mf", "epochs": 2, "refit": False})
    bundle = ModelBundle.from_training(
        fit(processed, params.train, params.seed).model, processed, {}
    )
    monkeypatch.setenv(memory.LIMIT_ENV, "1MB")
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        evaluate(bundle, processed, params.evaluate)
    message = str(caught.value)
    n_items = bundle.n_items
    assert message.startswith("not enough memory: the evaluate stage needs about ")
    assert "but 1.0 MB is available (RECOMMENDER_MEMORY_LIMIT=1MB)" in message
    assert "ranking blocks of 4,000,000 scores" in message
    assert f"EASE item x item matrices 4 x {n_items + 1:,} x {n_items + 1:,} x 8 B" in message
    assert "a smaller evaluate.ease_max_items" in message
    monkeypatch.delenv(memory.LIMIT_ENV)
    assert evaluate(bundle, processed, params.evaluate).metrics["test"]["rows"] == len(
        processed.test
    )
