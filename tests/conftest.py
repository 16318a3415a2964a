"""Fixtures shared by every test folder; the helpers behind them are in ``support.py``."""

from __future__ import annotations

from recommender.core.telemetry import disable_telemetry

# Before anything imports TensorFlow, MLflow, GX or BentoML: telemetry off, no start-up banners.
disable_telemetry()

import functools  # noqa: E402
import http.server  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from support import (  # noqa: E402
    ROOT,
    Synthetic,
    find_ml100k,
    make_synthetic,
    ml100k_candidates,
    tiny_params,
)


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The project's checkout (params.yaml, dvc.yaml, pipeline/, serving/)."""
    return ROOT


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K, read in place (``make test`` fetches it if it is nowhere)."""
    path = find_ml100k()
    if path is None:
        looked = ", ".join(str(p) for p in ml100k_candidates())
        pytest.fail(
            f"MovieLens 100K (u.data) not found in {looked}: run `make test`, which downloads it "
            "into data/raw/movielens-100k, or set ML100K_DIR to the folder holding u.data"
        )
    return path


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    """A seeded low-rank rating matrix as index arrays (300 users x 200 items, ~15k ratings)."""
    return make_synthetic()


@pytest.fixture(scope="session")
def params():  # noqa: ANN201
    """The tiny dataset's params (``support.TINY``; defaults elsewhere)."""
    return tiny_params()


@pytest.fixture(scope="session")
def processed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/processed`` for the tiny synthetic dataset (ingest + preprocess, in-process)."""
    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split import preprocess

    params = tiny_params()
    dataset = generate(params.synthetic, params.seed)
    out = tmp_path_factory.mktemp("processed") / "processed"
    write_processed(preprocess(dataset, params.preprocess, params.seed), out)
    return out


@pytest.fixture(scope="session")
def processed(processed_dir: Path):  # noqa: ANN201
    """The tiny synthetic dataset, preprocessed (train / val / test, vocabularies, features)."""
    from recommender.dataset.processed import load_processed

    return load_processed(processed_dir)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        pass


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a fresh folder: yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    # Never send loopback requests through a proxy the environment may define.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default, at every teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
