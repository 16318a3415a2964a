"""The MLflow model registry as the pipeline uses it: versions, aliases, and a login's refusals.

Shared by the register stage (which creates versions and moves ``champion``) and the package stage
(which reads ``@champion``), so neither stage imports the other. The gate's lock, which serialises
register stages, is :mod:`recommender.tracking.gate_lock`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recommender import tracking
from recommender.core.errors import RecommenderError

# CONTENT_TAG: the version tag holding the bundle's content digest (an identical retrain reuses
# the version; packaging and the service check the bundle against it).
from recommender.scoring.bundle import CONTENT_TAG

log = logging.getLogger("recommender")

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Model version tag naming the training run a version came from (the idempotency key).
RUN_TAG = "training_run_id"
#: How long to wait for a new model version to become READY (a remote registry may copy files).
READY_TIMEOUT_S = 300


class RegistryError(RecommenderError):
    """The model registry cannot be used (unreachable, or a version that never became READY)."""


class RegistryRefused(RegistryError):
    """The tracking server's login (MLflow's basic-auth app) refused a request: 401 or 403."""


#: HTTP status of each MLflow error code that means "not logged in" or "not allowed".
REFUSED_CODES = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}
_REFUSED_NAMES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
#: What every refusal message ends with: nothing half-done was published.
UNCHANGED = "no alias moved and the promotion report was not written"


def refused_status(exc: BaseException) -> int | None:
    """401 or 403 when ``exc`` is the server refusing the request, else None.

    MLflow's REST client raises an ``MlflowException`` carrying the error code; its artifact
    client (uploads, downloads through the server) a ``requests.HTTPError`` with the response.
    """
    status = REFUSED_CODES.get(str(getattr(exc, "error_code", "")))
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if status in (401, 403) else None


def refusal_message(status: int, what: str, needs: str) -> str:
    """One line: which user, what the server refused, where, and what to ask for."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    uri = tracking.redact(tracking.tracking_uri())
    code = f"{status} {_REFUSED_NAMES[status]}"
    if status == 401:
        who = f"the login of user {user!r}" if user else "a request without credentials"
        return (
            f"MLflow at {uri} refused {who} ({code}) while trying to {what}: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that "
            f"server; {UNCHANGED}"
        )
    return (
        f"MLflow refused user {user or '(no MLFLOW_TRACKING_USERNAME)'!r} permission to {what} "
        f"({code}) at {uri}: ask an admin for {needs}; {UNCHANGED}"
    )


@contextlib.contextmanager
def asking(what: str, needs: str) -> Iterator[None]:
    """Turn the server's 401/403 for the calls inside into one :class:`RegistryRefused` line.

    Args:
        what: What the calls do, as the end of "permission to ...".
        needs: The grant that allows it, as the end of "ask an admin for ...".
    """
    try:
        yield
    except RegistryRefused:
        raise
    except Exception as exc:
        status = refused_status(exc)
        if status is None:
            raise
        raise RegistryRefused(refusal_message(status, what, needs)) from None


def check_reachable(client: Any, uri: str, run_id: str) -> None:
    """One quick registry call and one tracking call; a clear error instead of minutes of retries.

    Raises:
        RegistryError: Naming the URI and what failed.
    """
    with tracking.no_retries():
        try:
            with asking("search the model registry", "READ on it"):
                client.search_registered_models(max_results=1)
        except RegistryRefused:
            raise
        except Exception as exc:  # noqa: BLE001 (MLflow raises many kinds; all mean "unusable")
            raise RegistryError(
                f"cannot use the MLflow tracking server / model registry at {tracking.redact(uri)} "
                f"({tracking.first_line(exc)}); start it or set MLFLOW_TRACKING_URI to one that is "
                f"running. Nothing was registered and no alias moved."
            ) from None
        try:
            with asking(f"read the training run {run_id}", "READ on its experiment"):
                client.get_run(run_id)
        except RegistryRefused:
            raise
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(
                f"the training run {run_id} (models/run.json) is not in the tracking store at "
                f"{tracking.redact(uri)} ({tracking.first_line(exc)}): run register with the "
                f"MLFLOW_TRACKING_URI that train used, or rerun train. Nothing was registered "
                f"and no alias moved."
            ) from None


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
        "not found" in str(exc).lower() or "does not exist" in str(exc).lower()
    )


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The version ``alias`` points at, or None (asked directly: search results omit aliases)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def wait_ready(client: Any, name: str, version: str, timeout: float = READY_TIMEOUT_S) -> Any:
    """Poll until the version is READY; raise if it failed or the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION":
            raise RegistryError(
                f"model version {name}/{version} failed to register: {mv.status_message}"
            )
        if time.monotonic() > deadline:
            raise RegistryError(
                f"model version {name}/{version} is still {mv.status} after {timeout:.0f} s"
            )
        time.sleep(1.0)


def version_for(
    client: Any, name: str, run: dict[str, Any], tags: dict[str, str], digest: str
) -> str:
    """The number of the version of ``name`` holding this model: the existing one, or a new one.

    Looked up by the training run id (rerunning the stage, or resuming after a crash), then by
    the bundle's content digest (an identical retrain: same data, params and seed give the same
    weights), so neither creates a second version of the same model. Call it under
    :func:`recommender.tracking.gate_lock.gate_lock`: the lookup and the creation are two calls.
    """
    import mlflow

    by_run = client.search_model_versions(f"name = '{name}' and run_id = '{run['run_id']}'")
    by_content = client.search_model_versions(
        f"name = '{name}' and tags.`{CONTENT_TAG}` = '{digest}'"
    )
    same_run = sorted(by_run, key=lambda mv: int(mv.version))
    same_content = sorted(by_content, key=lambda mv: int(mv.version))
    if same_run:
        mv = same_run[0]
        log.info("training run %s is already version %s of %s", run["run_id"], mv.version, name)
    elif same_content:
        mv = same_content[0]
        log.info(
            "the model of run %s is identical to version %s of %s (run %s): reusing it",
            run["run_id"], mv.version, name, mv.run_id,
        )  # fmt: skip
    else:
        with asking(f"create a version of registered model {name!r}", "EDIT on it"):
            mv = mlflow.register_model(run["model_uri"], name, await_registration_for=0, tags=tags)
        log.info("registered %s as version %s of %s", run["model_uri"], mv.version, name)
    return str(mv.version)


def load_version_bundle(name: str, version: str, dst: str | Path) -> Any:
    """Download a registered version and load its bundle (proves the version is usable).

    The model is the pyfunc :mod:`recommender.tracking.pyfunc` logs.
    """
    import mlflow

    from recommender.core.errors import DataError
    from recommender.scoring.bundle import ModelBundle

    with asking(f"download version {version} of registered model {name!r}", "READ on it"):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=dst))
    try:
        return ModelBundle.load(tracking.bundle_dir(local))
    except DataError as exc:  # a file missing or damaged (truncated, failing its CRC)
        raise RegistryError(f"model version {name}/{version} cannot be loaded: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (a truncated or foreign file: Keras says many things)
        raise RegistryError(
            f"model version {name}/{version} cannot be loaded ({tracking.first_line(exc)})"
        ) from None
