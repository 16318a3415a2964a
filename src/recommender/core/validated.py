"""Whether the ``validate`` stage passed on the ratings a later stage is about to read.

``validate`` writes into its summary (``reports/validation.json``) the SHA-256 of the ratings
Parquet its suites ran on. A later stage that finds a passing summary with the digest of the
ratings it reads knows what the suites checked (the columns, no nulls, one rating per pair)
without checking it again; any other summary, or none, is no such licence.
"""

from __future__ import annotations

import json
from pathlib import Path

from recommender.core.errors import DataError
from recommender.core.io import parquet_digest

#: The summary's key for the SHA-256 of the ratings Parquet the suites ran on.
RATINGS_DIGEST = "ratings_sha256"


def passed_on(summary_path: str | Path, data_dir: str | Path) -> bool:
    """Whether the validate summary at ``summary_path`` says every expectation passed on
    ``data_dir``'s ratings as they are now (``ratings.parquet``'s bytes)."""
    try:
        summary = json.loads(Path(summary_path).read_text())
        digest = parquet_digest(Path(data_dir) / "ratings.parquet")
    except (OSError, ValueError, DataError):
        return False
    return (
        isinstance(summary, dict)
        and summary.get("success") is True
        and summary.get(RATINGS_DIGEST) == digest
    )
