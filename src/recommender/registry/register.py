"""The register stage: version the trained model and move ``champion`` only through a tested gate.

The candidate is the model the train stage logged (``models/run.json``). It always becomes a version
of the registered model (once per training run: a rerun reuses the version). Whether it also
becomes the ``champion`` is decided on the candidate's own test split:

* the *primary* metric is NDCG@k for families trained to rank and RMSE for the others
  (``register.primary``); the other metric is the *guard*;
* with no champion yet, it must beat the baseline on the primary metric (popularity's NDCG or the
  bias baseline's RMSE, from ``metrics.json``);
* otherwise the champion is loaded from the registry and re-scored on the same test rows and
  users (its own vocabulary maps the raw ids), and a paired bootstrap over users gives confidence
  intervals for the change of both metrics. The candidate wins only if the whole primary
  interval lies beyond ``register.min_delta`` on the better side, the guard interval does not
  lie entirely beyond ``register.guard_delta`` on the worse side, *and* it beats the baseline
  (:func:`recommender.registry.gate.decide`).

A loser keeps its version and gets the ``challenger`` alias; the champion is untouched. A rerun
for a candidate that already is the champion replays its recorded promotion (same report, same
bytes); a champion set by hand is ``kept``.

Crash safety: every write that describes the candidate (the version, its tags, the training run's
metrics) happens first, and the alias move is the single last write to the registry. The version
is READY and its bundle has been downloaded and loaded before that, so ``@champion`` always points
at a complete model that loads. Killed at any point, the stage can simply be run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from recommender import tracking
from recommender.core import failpoints
from recommender.core.config import Params
from recommender.core.errors import RecommenderError
from recommender.core.io import pid_alive, write_json
from recommender.registry.gate import Comparison, decide, paired_bootstrap, round6

# CONTENT_TAG: the version tag holding the bundle's content digest (an identical retrain reuses
# the version; packaging and the service check the bundle against it).
from recommender.scoring.bundle import CONTENT_TAG, recorded_digest

log = logging.getLogger("recommender")

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Model version tag naming the training run a version came from (the idempotency key).
RUN_TAG = "training_run_id"
#: The gate's lock: a registered model of this name suffix exists while a register stage holds it.
LOCK_SUFFIX = ".gate-lock"
#: How long a register stage waits for another one's gate before giving up.
LOCK_WAIT_S = 600
#: Model version tag holding the gate's full record as JSON.
RECORD_TAG = "gate.record"
#: How long to wait for a new model version to become READY (a remote registry may copy files).
READY_TIMEOUT_S = 300


class RegistryError(RecommenderError):
    """The model registry cannot be used (unreachable, or a version that never became READY)."""


class RegistryRefused(RegistryError):
    """The tracking server's login (MLflow's basic-auth app) refused a request: 401 or 403."""


# --- a server with a login ----------------------------------------------------------------------

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


# --- lineage ------------------------------------------------------------------------------------


def _lock_paths(items: Any) -> list[str]:
    """The paths of a stage's ``deps`` or ``outs`` as ``dvc.lock`` (``- path: p``) or
    ``dvc.yaml`` (``- p`` or ``- p: {options}``) lists them, normalised."""
    paths = []
    for item in items or []:
        if isinstance(item, dict):
            item = item.get("path", next(iter(item), None) if len(item) == 1 else None)
        if isinstance(item, str) and item:
            paths.append(posixpath.normpath(item))
    return paths


def _overlaps(a: str, b: str) -> bool:
    """Whether one path is the other or inside it (a stage's out folder holds a file read)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream_stages(stages: dict[str, Any], reads: list[str], stage: str = "register") -> set[str]:
    """The stages of a ``dvc.lock`` whose outputs ``reads`` come from, directly or through others.

    Args:
        stages: The lock's ``stages`` mapping.
        reads: Paths (relative to the lock's folder) the stage reads.
        stage: The stage itself, never counted (its entry records its own previous run).
    """
    found: set[str] = set()
    frontier = list(reads)
    while frontier:
        path = frontier.pop()
        for other, entry in stages.items():
            if other == stage or other in found or not isinstance(entry, dict):
                continue
            outs = [out for key in ("outs", "metrics", "plots") for out in entry.get(key) or []]
            if any(_overlaps(path, out) for out in _lock_paths(outs)):
                found.add(other)
                frontier.extend(_lock_paths(entry.get("deps")))
    return found


def lock_digest(
    lock_path: str | Path,
    reads: Iterable[str | Path] | None = None,
    stage: str = "register",
) -> str | None:
    """SHA-256 of the entries of ``dvc.lock`` that ``stage`` depends on; None when there is no lock.

    What identifies the candidate is how its inputs were made: the entries (commands, dependency
    and output hashes, params) of the stages upstream of register, found by following its reads
    back through the other stages' outputs and dependencies. Everything else changes without the
    candidate changing: register's own entry records its previous output, and a downstream stage's
    (``package``, which reads ``promotion.json``) is rewritten after every register run, so hashing
    either would make each forced rerun describe the same model differently and rerun ``package``.

    Args:
        lock_path: ``dvc.lock``; its entries' paths are relative to its folder.
        reads: What the stage reads (relative to the working directory, or absolute). Default:
            the ``deps`` of ``stage``'s own entry; a lock without them (register has not run yet)
            hashes every other stage's entry.
        stage: The stage the digest is for.
    """
    import yaml

    path = Path(lock_path)
    if not path.is_file():
        return None
    lock = yaml.safe_load(path.read_text()) or {}
    stages = lock.get("stages") or {}
    own = stages.get(stage)
    own = own if isinstance(own, dict) else {}
    if reads is not None:
        root = path.resolve().parent
        paths = []
        for read in reads:
            absolute = Path(read).resolve()
            if absolute.is_relative_to(root):
                paths.append(absolute.relative_to(root).as_posix())
        kept = upstream_stages(stages, paths, stage)
    elif own.get("deps"):
        kept = upstream_stages(stages, _lock_paths(own["deps"]), stage)
    else:
        kept = {name for name in stages if name != stage}
    chosen = {name: stages[name] for name in sorted(kept)}
    canonical = json.dumps({**lock, "stages": chosen}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def params_digest(params: Params) -> str:
    """SHA-256 of the validated params (canonical JSON, defaults filled in)."""
    canonical = json.dumps(
        params.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def lineage(
    params: Params,
    run: dict[str, Any],
    data_dir: str | Path,
    lock_path: str | Path | None,
    project_dir: str | Path = ".",
    reads: Iterable[str | Path] | None = None,
) -> dict[str, str]:
    """What the candidate was made from, as model version tags (absent facts are left out).

    ``reads`` are the stage's inputs (model folder, data folder, metrics): the lock's digest
    covers the stages they come from (:func:`lock_digest`).
    """
    facts = {
        RUN_TAG: run["run_id"],
        "lineage.model_uri": run["model_uri"],
        "lineage.git_commit": tracking.git_commit(project_dir),
        "lineage.dvc_lock_sha256": lock_digest(lock_path, reads) if lock_path else None,
        "lineage.data_hash": tracking.file_digest([data_dir]),
        "lineage.params_sha256": params_digest(params),
    }
    return {k: v for k, v in facts.items() if v is not None}


# --- the registry -------------------------------------------------------------------------------


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


def _is_not_found(exc: Exception) -> bool:
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
        if _is_not_found(exc):
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


def ensure_version(
    client: Any, name: str, run: dict[str, Any], tags: dict[str, str], digest: str
) -> Any:
    """The version of ``name`` holding this model: the existing one, or a new one; READY.

    Looked up by the training run id (rerunning the stage, or resuming after a crash), then by
    the bundle's content digest (an identical retrain: same data, params and seed give the same
    weights), so neither creates a second version of the same model. Call it under
    :func:`gate_lock`: the lookup and the creation are two calls.
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
    return wait_ready(client, name, str(mv.version))


@contextlib.contextmanager
def gate_lock(client: Any, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Only one register stage at a time runs the gate of ``name``, across processes and hosts.

    MLflow has no compare-and-set on aliases, but it does refuse to create a registered model
    that exists (a unique key in its database): the lock is the registered model
    ``<name>.gate-lock``, created on entry and deleted on exit, and its tags name the holder.
    A holder on this host whose process is gone (killed mid-gate) is taken over at once; one on
    another host only after ``wait_s``. Two stages that both find the same dead holder could
    both take over: that window (a crash, then two runs in the same second) is the one case
    where the deployment's own lock is still needed.

    On a server with a login, the user must be allowed to create registered models (its creator
    gets MANAGE on the lock, so it can delete it again); taking over another user's dead lock
    needs MANAGE on it. A lock the user may not even read counts as held by a live stage.
    """
    import socket

    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    me = {"host": socket.gethostname(), "pid": str(os.getpid())}
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        me["user"] = os.environ["MLFLOW_TRACKING_USERNAME"]
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            with asking(
                f"create the registered model {lock!r} (the lock register holds while it judges "
                f"{name!r})",
                "the right to create registered models",
            ):
                client.create_registered_model(
                    lock,
                    tags=me,
                    description=f"held while a register stage runs the gate of {name}",
                )
            break
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            holder = client.get_registered_model(lock).tags or {}
        except MlflowException as exc:
            if refused_status(exc) is None:
                continue  # released between the two calls: try again
            holder = {"user": "another user (this one may not read the lock)"}
        dead = holder.get("host") == me["host"] and not pid_alive(int(holder.get("pid") or 0))
        if dead or time.monotonic() > deadline:
            if not dead:
                raise RegistryError(
                    f"the gate of {name} has been locked by {holder} for over {wait_s:.0f} s: "
                    f"if no register stage is running, delete the registered model {lock!r} "
                    "(MLflow UI, or MlflowClient().delete_registered_model) and rerun"
                )
            log.warning("taking over the gate lock of a register stage that died: %s", holder)
            try:
                with asking(
                    f"delete the registered model {lock!r}, the lock a register stage that died "
                    f"({holder}) left",
                    "MANAGE on it (or to delete it)",
                ):
                    client.delete_registered_model(lock)
            except MlflowException:
                pass  # released meanwhile: try again
            continue
        if not waited:
            log.info("waiting for another register stage (%s) to finish its gate", holder)
            waited = True
        time.sleep(0.5)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


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


# --- the stage ----------------------------------------------------------------------------------


def _rmse(sq: np.ndarray) -> float:
    return round6(np.sqrt(np.mean(sq)))


def register_and_gate(
    params: Params,
    model_dir: str | Path,
    data_dir: str | Path,
    metrics_path: str | Path,
    out_path: str | Path,
    lock_path: str | Path | None = "dvc.lock",
    project_dir: str | Path = ".",
) -> dict[str, Any]:
    """Register the train stage's model, run the champion gate, write ``out_path``.

    Args:
        params: The validated params (``register``, ``tracking`` and ``seed`` are read).
        model_dir: The train stage's folder (``run.json`` names the MLflow run and model).
        data_dir: The preprocess stage's folder (``test.parquet`` is scored).
        metrics_path: The evaluate stage's ``metrics.json`` (bias baseline, test RMSE).
        out_path: ``promotion.json`` to write (a DVC metric; same inputs, same bytes).
        lock_path: ``dvc.lock`` whose digest goes into the lineage (skipped when missing).
        project_dir: Where the default SQLite store lives and whose git commit is recorded.

    Returns:
        The content written to ``out_path``.

    Raises:
        RegistryError: The registry cannot be reached or refuses the model.
    """
    import mlflow

    name = params.tracking.registered_model
    run = tracking.read_run(model_dir)
    uri = tracking.configure(project_dir)
    client = mlflow.MlflowClient()
    check_reachable(client, uri, run["run_id"])  # tracking.connect's probe, plus the run

    metrics = json.loads(Path(metrics_path).read_text())
    digest = recorded_digest(Path(model_dir) / tracking.BUNDLE_DIR)
    reads = (model_dir, data_dir, metrics_path)  # the lock digest covers the stages behind them
    facts = {**lineage(params, run, data_dir, lock_path, project_dir, reads), CONTENT_TAG: digest}
    # The calls below name what they ask for when the server refuses; this names the rest.
    with asking(f"use registered model {name!r}", "EDIT on it"), gate_lock(client, name):
        record = _gate(params, client, run, facts, digest, metrics, metrics_path, data_dir)
    write_json(record, out_path)
    return record


def _gate(
    params: Params,
    client: Any,
    run: dict[str, Any],
    facts: dict[str, str],
    digest: str,
    metrics: dict[str, Any],
    metrics_path: str | Path,
    data_dir: str | Path,
) -> dict[str, Any]:
    """Version the candidate, judge it against the champion, move an alias (under the lock)."""
    import pandas as pd

    from recommender.evaluation.evaluate import ndcg_by_user

    cfg, name = params.register_, params.tracking.registered_model
    bias_rmse = float(metrics["baselines"]["bias"]["rmse"])
    candidate = ensure_version(client, name, run, facts, digest)
    version = str(candidate.version)
    champion = alias_version(client, name, CHAMPION)

    test = pd.read_parquet(Path(data_dir) / "test.parquet")
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    y = test["rating"].to_numpy(dtype=np.float64)

    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        # The registered copy is the one scored, so the gate judges exactly what @champion serves.
        bundle = load_version_bundle(name, version, Path(tmp) / "candidate")
        sq_c = (bundle.predict_raw(users, items).astype(np.float64) - y) ** 2
        candidate_rmse = _rmse(sq_c)
        expected = float(metrics["test"]["rmse"])
        if abs(candidate_rmse - expected) > 1e-4:
            raise RegistryError(
                f"version {name}/{version} scores test RMSE {candidate_rmse:.6f} on "
                f"{Path(data_dir) / 'test.parquet'}, but {metrics_path} says {expected:.6f}: "
                f"the metrics are not from this model (rerun the evaluate stage)"
            )

        if champion is not None and str(champion.version) == version:
            gate = _recorded_gate(candidate)
        else:
            k, threshold = params.evaluate.k, params.evaluate.relevance_threshold
            ndcg_name = f"ndcg@{k}"
            ranked_users, ndcg_c = ndcg_by_user(bundle, bundle, users, items, y, k, threshold)
            rmse = Comparison("rmse", False, candidate_rmse, bias_rmse, "bias baseline")
            ndcg = Comparison(
                ndcg_name,
                True,
                round6(np.mean(ndcg_c)) if ndcg_c.size else 0.0,
                float(metrics["baselines"]["popularity"][ndcg_name] or 0.0),
                "popularity ranking",
            )
            champion_rmse = champion_ndcg = None
            if champion is not None:
                held = _load_champion(name, str(champion.version), Path(tmp) / "champion")
                sq_h = (held.predict_raw(users, items).astype(np.float64) - y) ** 2
                champion_rmse = _rmse(sq_h)
                _, ndcg_h = ndcg_by_user(held, bundle, users, items, y, k, threshold)
                champion_ndcg = round6(np.mean(ndcg_h)) if ndcg_h.size else 0.0
                n, conf, seed = cfg.bootstrap_resamples, cfg.confidence, params.seed
                rmse_change = paired_bootstrap(sq_c, sq_h, users, n, conf, seed)
                rmse = replace(rmse, interval=rmse_change)
                if ndcg_c.size:
                    ndcg_change = paired_bootstrap(
                        ndcg_c, ndcg_h, ranked_users, n, conf, seed, statistic="mean"
                    )
                    ndcg = replace(ndcg, interval=ndcg_change)
            ranking = cfg.primary == "ndcg" or (
                cfg.primary == "auto" and bundle.retrieval is not None
            )
            primary, guard = (ndcg, rmse) if ranking else (rmse, ndcg)
            verdict = decide(primary, guard, cfg.min_delta, cfg.guard_delta)
            gate = {
                "decision": "promoted" if verdict.promote else "rejected",
                "reason": verdict.reason,
                "primary": primary.name,
                "guard": guard.name,
                "candidate_version": int(version),
                "champion_version": int(champion.version) if champion is not None else None,
                "candidate_rmse": candidate_rmse,
                "champion_rmse": champion_rmse,
                "bias_rmse": round6(bias_rmse),
                "candidate_ndcg": ndcg.candidate,
                "champion_ndcg": champion_ndcg,
                "popularity_ndcg": round6(ndcg.baseline),
                "ranked_users": int(ndcg_c.size),
                "interval": asdict(primary.interval) if primary.interval else None,
                "guard_interval": asdict(guard.interval) if guard.interval else None,
                "min_delta": cfg.min_delta,
                "guard_delta": cfg.guard_delta,
                "confidence": cfg.confidence,
                "resamples": cfg.bootstrap_resamples,
                "test_rows": int(y.size),
            }

    record = {**gate, "registered_model": name, "lineage": facts}
    _describe(client, name, version, run["run_id"], gate, facts)
    failpoints.hit("register.before_alias")
    _move_alias(client, name, version, gate["decision"])
    failpoints.hit("register.after_alias")
    return record


def _load_champion(name: str, version: str, dst: Path) -> Any:
    try:
        return load_version_bundle(name, version, dst)
    except RegistryError as exc:
        raise RegistryError(
            f"the current champion cannot be judged against: {exc}. Nothing was promoted. To "
            f'let new models compete again, move or remove the alias, e.g. python -c "import '
            f"mlflow; mlflow.MlflowClient().delete_registered_model_alias('{name}', "
            f"'{CHAMPION}')\" (with the same MLFLOW_TRACKING_URI), then rerun register"
        ) from None


def _recorded_gate(mv: Any) -> dict[str, Any]:
    """The gate record of a version that is already champion (a rerun after its promotion).

    Replaying the recorded promotion keeps ``promotion.json`` byte-stable across reruns. A
    champion whose record is missing or says otherwise was made champion by hand: it stays.
    """
    recorded = json.loads(mv.tags.get(RECORD_TAG) or "{}")
    if recorded.get("decision") == "promoted":
        return recorded
    return {
        "decision": "kept",
        "reason": "already the champion (the alias was set outside this stage)",
        "candidate_version": int(mv.version),
        "champion_version": int(mv.version),
    }


def _describe(
    client: Any,
    name: str,
    version: str,
    run_id: str,
    gate: dict[str, Any],
    facts: dict[str, str],
) -> None:
    """Tag the version and log the gate to the training run: all before any alias moves."""
    from mlflow.entities import Metric, RunTag

    tags = {
        **facts,
        "gate.decision": gate["decision"],
        "gate.reason": gate["reason"],
        RECORD_TAG: json.dumps(gate, sort_keys=True),
    }
    if gate.get("champion_version") is not None:
        tags["gate.champion_version"] = str(gate["champion_version"])
    interval, guard = gate.get("interval"), gate.get("guard_interval")
    if gate.get("primary"):
        tags["gate.primary"] = str(gate["primary"])
    if interval:
        tags["gate.delta_interval"] = f"[{interval['low']}, {interval['high']}]"
    if guard:
        tags["gate.guard_interval"] = f"[{guard['low']}, {guard['high']}]"
    with asking(f"tag version {version} of registered model {name!r}", "EDIT on it"):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)

    now = int(time.time() * 1000)
    values = {
        "gate_promoted": 1.0 if gate["decision"] == "promoted" else 0.0,
        "gate_candidate_rmse": gate.get("candidate_rmse"),
        "gate_champion_rmse": gate.get("champion_rmse"),
        "gate_delta": interval["delta"] if interval else None,
        "gate_delta_low": interval["low"] if interval else None,
        "gate_delta_high": interval["high"] if interval else None,
        "gate_candidate_ndcg": gate.get("candidate_ndcg"),
        "gate_champion_ndcg": gate.get("champion_ndcg"),
        "gate_guard_low": guard["low"] if guard else None,
        "gate_guard_high": guard["high"] if guard else None,
    }
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
    run_tags = [
        RunTag("registry.model", name),
        RunTag("registry.version", version),
        RunTag("gate.decision", gate["decision"]),
        RunTag("gate.reason", gate["reason"][:5000]),
    ]
    with asking(f"log the gate's result to the training run {run_id}", "EDIT on its experiment"):
        client.log_batch(run_id, metrics=metrics, tags=run_tags)
        client.log_dict(run_id, {**gate, "lineage": facts}, "promotion.json")


def _move_alias(client: Any, name: str, version: str, decision: str) -> None:
    """The single last registry write: ``champion`` to a winner, ``challenger`` to a loser.

    A version that is champion (``promoted`` or ``kept``) is never also the challenger.
    """
    if decision in ("promoted", "kept"):
        challenger = alias_version(client, name, CHALLENGER)
        if challenger is not None and str(challenger.version) == version:
            with asking(
                f"remove alias {CHALLENGER!r} from version {version} of registered model {name!r}",
                "MANAGE on it (MLflow asks MANAGE for deleting an alias)",
            ):
                client.delete_registered_model_alias(name, CHALLENGER)
    alias = {"promoted": CHAMPION, "rejected": CHALLENGER}.get(decision)
    if alias is None:
        return
    with asking(
        f"move alias {alias!r} of registered model {name!r} to version {version}", "EDIT on it"
    ):
        client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:
        log.info("%s version %s is now @%s", name, version, CHAMPION)
    else:
        log.info("%s version %s is @%s; @%s unchanged", name, version, CHALLENGER, CHAMPION)
