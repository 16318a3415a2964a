"""BentoML's private API, all of it behind ``recommender.serving.bentoml_internals``.

An upgrade that moves one of them fails here, naming the API, instead of breaking the package
stage or the service at run time.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from support import ROOT

from recommender.serving import bentoml_internals as internals

pytestmark = pytest.mark.slow


def test_every_private_api_this_project_uses_is_where_it_was() -> None:
    internals.check()  # raises MovedAPI naming the moved one
    assert internals.worker_index() is None  # not in a bentoml serve worker
    logger = internals.request_error_logger()
    assert isinstance(logger, logging.Logger) and logger.name == internals.REQUEST_ERROR_LOGGER


def test_a_moved_api_fails_loudly_naming_it() -> None:
    with pytest.raises(internals.MovedAPI, match=r"private API bentoml\._internal\.context:"):
        internals._resolve("bentoml._internal.context:server_context.no_such_attribute")
    with pytest.raises(internals.MovedAPI, match="bentoml._internal.no_such_module"):
        internals._resolve("bentoml._internal.no_such_module:x")


def test_no_other_module_uses_bentomls_private_api() -> None:
    private = ("-e", "bentoml._internal", "-e", "_bentoml_impl")
    found = subprocess.run(
        ["git", "grep", "--untracked", "-l", *private, "--", "src", "serving"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert found == ["src/recommender/serving/bentoml_internals.py"], found
    assert sys.modules.get("recommender.serving.bentoml_internals") is internals
