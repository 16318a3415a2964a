"""Fixtures of the integration tests: a private PostgreSQL cluster (helpers in
``integration_helpers.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from integration_helpers import Postgres

from recommender.stack.postgres import StackError, start_postgres

# --- PostgreSQL: a private cluster for one test module -------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A database ``mlflow`` in a cluster of its own: initdb + pg_ctl in a temporary folder,
    127.0.0.1 only, a free port, password auth (:func:`recommender.stack.postgres.start_postgres`,
    the launcher ``python -m recommender.stack`` uses too). Removed after the module."""
    try:
        cluster = start_postgres(databases=("mlflow",))
    # No binaries (make test installs them: scripts/ensure_debian_package.sh), or no driver.
    except (StackError, ImportError) as exc:
        pytest.fail(f"cannot start PostgreSQL: {exc}")
    try:
        yield cluster.database("mlflow")
    finally:
        cluster.stop()
