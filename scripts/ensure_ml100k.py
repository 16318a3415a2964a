"""Makes sure the tests that read the real MovieLens 100K find it (``make test`` runs this first).

The tests look in ``$ML100K_DIR``, else ``../shared/data/ml-100k`` beside the checkout, else
``data/raw/movielens-100k`` (``ml100k_candidates`` in ``tests/support.py``). When none holds it,
it is fetched into ``data/raw/movielens-100k`` by the ingest stage's own download (GroupLens, or
the mirror in ``MOVIELENS_BASE_URL``; progress bar, pinned SHA-256, nothing kept on failure), the
folder a pipeline with ``data.source: movielens-100k`` reads too. It is git-ignored: the set's
license forbids redistributing it. Offline, this says so and exits 0, so that the other tests
still run and the ones that need the set fail naming the folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import ML100K_DOWNLOADS, find_ml100k, ml100k_candidates  # noqa: E402

from recommender.core.errors import DataError  # noqa: E402
from recommender.data.movielens import find_folder  # noqa: E402


def main() -> int:
    if find_ml100k() is not None:
        return 0
    if len(ml100k_candidates()) == 1:  # ML100K_DIR names the one place the user wants
        print(f"ML100K_DIR={ml100k_candidates()[0]} holds no u.data", file=sys.stderr)
        return 0
    print(f"MovieLens 100K is not beside the checkout: fetching it into {ML100K_DOWNLOADS}")
    try:
        find_folder("movielens-100k", str(ML100K_DOWNLOADS), download=True)
    except DataError as exc:
        print(f"MovieLens 100K could not be fetched; its tests will fail: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
