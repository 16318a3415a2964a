"""Fixtures of the serving tests: a tiny packaged champion and a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving_helpers import Packaged, build_packaged, serve
from support import Server, stop

from recommender.core.telemetry import QUIET, TELEMETRY_OFF


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**TELEMETRY_OFF, **QUIET}.items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.setenv("BENTOML_HOME", str(root / "bentoml"))
        yield build_packaged(root, uri)


@pytest.fixture(scope="session")
def server(packaged: Packaged) -> Iterator[Server]:
    """The built Bento served by a real ``bentoml serve`` process."""
    srv = serve(packaged, packaged.root / "serve.log")
    try:
        yield srv
    finally:
        stop(srv.proc)
