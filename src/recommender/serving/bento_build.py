"""``python -m bentoml`` with the package stage's failpoint around it (a child of that stage).

The same command line as ``bentoml``; with ``RECOMMENDER_FAILPOINT=package.bento_copy@<n>`` the
process dies after copying the n-th file into the store's ``bentos/`` folder (see
:mod:`recommender.core.failpoints`).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from recommender.core import failpoints

if __name__ == "__main__":
    store = Path(os.environ.get("BENTOML_HOME", ".")) / "bentos"
    sys.argv = ["bentoml", *sys.argv[1:]]
    with failpoints.during_copies("package.bento_copy", under=store):
        runpy.run_module("bentoml", run_name="__main__", alter_sys=True)
