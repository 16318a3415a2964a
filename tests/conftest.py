"""Fixtures shared by every test folder. Keep it small: folder-specific ones live beside them."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K, read in place (its license forbids copying it into the repo)."""
    path = Path(os.environ.get("ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))
    if not (path / "u.data").is_file():
        pytest.fail(f"MovieLens 100K not found at {path}: set ML100K_DIR to its folder")
    return path


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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
