"""Fixtures for model tests: a tiny synthetic dataset run through the real data stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.config import Params, parse_params
from recommender.data.synthetic import generate
from recommender.preprocess import Processed, load_processed, preprocess, write_processed

TINY = {
    "synthetic": {"n_users": 150, "n_items": 200, "n_ratings": 6000},
    "train": {"epochs": 15, "patience": 3, "batch_size": 256, "learning_rate": 0.01},
}


def tiny_params(**overrides: dict) -> Params:
    """Params for the tiny dataset, with per-section overrides merged in."""
    raw: dict = {name: dict(values) for name, values in TINY.items()}
    for name, values in overrides.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_params(raw)


@pytest.fixture(scope="session")
def params() -> Params:
    """The tiny dataset's params (defaults elsewhere)."""
    return tiny_params()


@pytest.fixture(scope="session")
def processed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/processed`` for the tiny synthetic dataset (ingest + preprocess, in-process)."""
    params = tiny_params()
    dataset = generate(params.synthetic, params.seed)
    out = tmp_path_factory.mktemp("processed") / "processed"
    write_processed(preprocess(dataset, params.preprocess, params.seed), out)
    return out


@pytest.fixture(scope="session")
def processed(processed_dir: Path) -> Processed:
    return load_processed(processed_dir)
