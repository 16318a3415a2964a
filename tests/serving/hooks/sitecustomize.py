"""A test-only hook: the package stage's ``package.bento_copy`` failpoint inside ``bentoml build``.

The package stage runs ``python -m bentoml build`` as a child, with nothing of the tests around
it. ``tests/serving/test_package_crash.py`` puts this folder on the child's ``PYTHONPATH``, so
Python imports this module at start-up (``site``'s ``sitecustomize`` hook); in a
``python -m bentoml build`` process with ``RECOMMENDER_FAILPOINT=package.bento_copy@<n>`` it
counts each file BentoML copies into the store's ``bentos/`` folder and dies (SIGKILL) after the
n-th (:func:`recommender.core.failpoints.during_copies`). Anywhere else it does nothing.
"""

from __future__ import annotations

import os
import sys

POINT = "package.bento_copy"


def _is_bentoml_build() -> bool:
    argv = getattr(sys, "orig_argv", [])
    return argv[1:3] == ["-m", "bentoml"] and "build" in argv[3:]


if os.environ.get("RECOMMENDER_FAILPOINT", "").partition("@")[0] == POINT and _is_bentoml_build():
    from pathlib import Path

    from recommender.core import failpoints

    _STORE = Path(os.environ.get("BENTOML_HOME", ".")) / "bentos"
    # Entered for the life of the process: the copy it counts is BentoML's, at the end of build.
    _ARMED = failpoints.during_copies(POINT, under=_STORE)
    _ARMED.__enter__()
