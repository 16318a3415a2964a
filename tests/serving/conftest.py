"""Fixtures of the serving tests: a tiny packaged champion and a real server."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from serving_helpers import SERVING, Packaged, build_packaged, serve, serving_env
from support import Server, stop


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with serving_env(root, uri) as store:
        yield build_packaged(root, uri, store)


@pytest.fixture(scope="session")
def server(packaged: Packaged) -> Iterator[Server]:
    """The built Bento served by a real ``bentoml serve`` process."""
    srv = serve(packaged, packaged.root / "serve.log")
    try:
        yield srv
    finally:
        stop(srv.proc)


@pytest.fixture(scope="session")
def service_module(packaged: Packaged) -> Iterator[Any]:
    """``serving/service.py`` imported in this process (integer ids), once per session: it
    registers a Prometheus metric, which a second import would register again (an error)."""
    name = "recommender_service"
    spec = importlib.util.spec_from_file_location(name, SERVING / "service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered like a real import: pydantic resolves the generic models through it.
    sys.modules[name] = module
    try:
        with pytest.MonkeyPatch.context() as mp:  # what the import reads (or sets), then restored
            mp.setenv("RECOMMENDER_BENTO_MODEL", packaged.record["bento_model"])
            mp.delenv("RECOMMENDER_ID_TYPE", raising=False)
            mp.setenv("BENTOML_CONTAINERIZED", "true")
            spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
