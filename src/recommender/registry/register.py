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
at a complete model that loads. Killed at any point, the stage can simply be run again. A stage
that fails (rather than being killed) once the version exists tags it ``gate.decision=failed``
with the reason, so no version is left looking judged when it was not. The gate runs under
:func:`gate_lock` (one stage at a time; a dead holder's lock is taken over by one stage only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
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
#: How long a holder's lease on the gate lock lasts; it renews it every third of that.
LOCK_LEASE_S = 120.0
#: How far apart two hosts' clocks may be: a lease counts as over this long after its end.
CLOCK_SKEW_S = 30.0
#: How often a waiting stage looks at the lock again.
LOCK_POLL_S = 0.5
#: ``<lock><EVICT_INFIX><holder's nonce>``: the claim on removing a gone holder's lock.
EVICT_INFIX = ".evict-"
#: How many levels of claims (a claim's holder died too) a stage removes before it waits.
MAX_EVICT_DEPTH = 3
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

    :func:`version_for`, then :func:`wait_ready`.
    """
    return wait_ready(client, name, version_for(client, name, run, tags, digest))


def version_for(
    client: Any, name: str, run: dict[str, Any], tags: dict[str, str], digest: str
) -> str:
    """The number of the version of ``name`` holding this model: the existing one, or a new one.

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
    return str(mv.version)


# --- the gate lock ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock-like registered model (the gate lock, or a claim on removing one)."""

    model: str
    tags: dict[str, str]
    created_ms: int

    @property
    def identity(self) -> str:
        """This holding and no other: its nonce (a lock made before nonces: its creation time)."""
        return self.tags.get("nonce") or f"created-{self.created_ms}"

    @property
    def lease_s(self) -> float:
        return _number(self.tags.get("lease_s"), LOCK_LEASE_S)

    @property
    def lease_until(self) -> float:
        """Unix time the lease ends, by the holder's clock (before leases: creation + a lease)."""
        return _number(self.tags.get("lease_until"), self.created_ms / 1000 + self.lease_s)


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def _holder_tags(lease_s: float) -> dict[str, str]:
    """The tags naming a new holding: host, pid, user, a nonce, and a lease from now."""
    tags = {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "nonce": uuid.uuid4().hex[:16],
        "lease_s": f"{lease_s:g}",
        "lease_until": f"{time.time() + lease_s:.3f}",
    }
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        tags["user"] = os.environ["MLFLOW_TRACKING_USERNAME"]
    return tags


def _lost_create(exc: Exception) -> bool:
    """Whether a create failed because the name was taken (then perhaps freed again at once).

    MLflow's SQL store answers a create that hits the unique key by reading the model that holds
    the name, to word its error: when that model is deleted in between, the create fails with
    ``RESOURCE_DOES_NOT_EXIST`` instead of ``RESOURCE_ALREADY_EXISTS`` (seen on ``mlflow
    server``). Either way the create lost; the caller goes round again.
    """
    return getattr(exc, "error_code", "") in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")


def read_holder(client: Any, model: str) -> LockHolder | None:
    """The holder of the lock-like registered model ``model``; None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_registered_model(model)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise
    return LockHolder(model, dict(found.tags or {}), int(found.creation_timestamp or 0))


def expired(holder: LockHolder, watch: dict[tuple[str, ...], float]) -> str | None:
    """Why ``holder`` no longer holds its lock, or None while it may.

    * It ran on this host and its process is gone (killed mid-gate): at once.
    * Its lease ended over :data:`CLOCK_SKEW_S` ago by this host's clock: a holder on any host
      that crashed or was cut off (a live one renews it every third of the lease).
    * Its lease stayed unchanged for a whole lease plus :data:`CLOCK_SKEW_S` of this process's
      own clock while it watched (``watch`` remembers when it first saw each lease): whatever the
      two clocks say, so a holder whose clock runs ahead is not waited on forever.
    """
    pid = holder.tags.get("pid", "")
    here = holder.tags.get("host") == socket.gethostname()
    if here and pid.isdigit() and int(pid) > 0 and not pid_alive(int(pid)):
        return f"died (its process {pid} on this host is gone)"
    late = time.time() - holder.lease_until
    if late > CLOCK_SKEW_S:
        return f"stopped renewing its lease {late:.0f} s ago"
    now = time.monotonic()
    quiet = now - watch.setdefault((holder.model, holder.identity, str(holder.lease_until)), now)
    if quiet > holder.lease_s + CLOCK_SKEW_S:
        return f"has not renewed its lease in the {quiet:.0f} s this stage watched"
    return None


def evict(
    client: Any,
    holder: LockHolder,
    watch: dict[tuple[str, ...], float],
    what: str = "the lock a register stage that is gone left",
    depth: int = 0,
) -> bool:
    """Delete ``holder``'s lock if it still holds it: True for the one caller that did.

    The claim ``<lock>.evict-<holder's nonce>`` is created first (a create is what MLflow's
    database refuses twice); only its creator reads the lock again and, if ``holder`` still holds
    it, deletes it; then it deletes the claim. See :func:`gate_lock` for why this has one winner.
    A claim whose own holder died is removed the same way, one level up (at most
    :data:`MAX_EVICT_DEPTH` levels), and the caller goes round again.
    """
    from mlflow.exceptions import MlflowException

    claim = f"{holder.model}{EVICT_INFIX}{holder.identity}"
    try:
        with asking(
            f"create the registered model {claim!r} (the claim on removing {holder.model!r})",
            "the right to create registered models",
        ):
            client.create_registered_model(
                claim,
                tags=_holder_tags(LOCK_LEASE_S),
                description=f"held while a register stage removes {holder.model}",
            )
    except MlflowException as exc:
        if not _lost_create(exc):
            raise
        # Another stage is removing this holder right now, or died while it did.
        try:
            other = read_holder(client, claim)
        except MlflowException:
            return False
        why = expired(other, watch) if other is not None else None
        if other is not None and why and depth < MAX_EVICT_DEPTH:
            log.warning("removing the claim %r of a register stage that %s", claim, why)
            evict(client, other, watch, "a claim a register stage that is gone left", depth + 1)
        return False
    try:
        current = read_holder(client, holder.model)
        if current is None or current.identity != holder.identity:
            return False  # removed already, and perhaps taken since: not this holder's any more
        with asking(
            f"delete the registered model {holder.model!r}, {what} ({holder.tags})",
            "MANAGE on it (or to delete it)",
        ):
            client.delete_registered_model(holder.model)
        return True
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(claim)


class GateLease:
    """The gate lock this stage holds: a daemon thread renews its lease every third of it.

    Call :meth:`check` right before publishing: it renews the lease once more and raises unless
    the lock is still this stage's with a lease that never lapsed.
    """

    def __init__(self, client: Any, lock: str, nonce: str, lease_s: float, since: float) -> None:
        self.client, self.lock, self.nonce, self.lease_s = client, lock, nonce, lease_s
        #: Until when (``time.monotonic()``) no other stage can have taken the lock over.
        self.valid_until = since + lease_s
        self.lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {lock}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def renew(self) -> None:
        """Push the lease end one lease past now, if the lock is still this stage's."""
        with self._mutex:
            if self.lost is not None:
                return
            started = time.monotonic()
            if started > self.valid_until:
                self.lost = f"its lease lapsed {started - self.valid_until:.0f} s ago"
                return
            current = read_holder(self.client, self.lock)
            if current is None or current.identity != self.nonce:
                self.lost = "another stage took it over" if current else "it was deleted"
                return
            until = f"{time.time() + self.lease_s:.3f}"
            self.client.set_registered_model_tag(self.lock, "lease_until", until)
            self.valid_until = started + self.lease_s

    def check(self) -> None:
        """Raise :class:`RegistryError` unless this stage still holds the lock (renewing it)."""
        self.renew()
        if self.lost is not None:
            raise RegistryError(
                f"this register stage lost the gate lock {self.lock!r} ({self.lost}) before it "
                "could move an alias: nothing was promoted; run register again"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3) and self.lost is None:
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 (kept trying until the lease lapses)
                log.warning("could not renew the gate lock's lease (%s)", tracking.first_line(exc))


@contextlib.contextmanager
def gate_lock(
    client: Any, name: str, wait_s: float = LOCK_WAIT_S, lease_s: float = LOCK_LEASE_S
) -> Iterator[GateLease]:
    """Only one register stage at a time runs the gate of ``name``, across processes and hosts.

    MLflow has no compare-and-set on aliases, but it does refuse to create a registered model
    that exists (a unique key in its database): the lock is the registered model
    ``<name>.gate-lock``, created on entry and deleted on exit. Its tags name the holder (host,
    pid, user), a ``nonce`` no other holding shares, and a lease: ``lease_until`` (Unix time,
    the holder's clock), renewed every ``lease_s / 3`` by a daemon thread while the gate runs.

    A holder is gone (:func:`expired`) when it ran on this host and its pid is dead (at once), or
    when its lease ended over :data:`CLOCK_SKEW_S` ago, on any host. A live holder is waited on;
    after ``wait_s`` the stage fails naming it.

    **Taking over is a step only one stage wins** (:func:`evict`). Plain ``delete`` cannot be
    that step: measured on MLflow 3.17 (SQLite store and ``mlflow server``), two deletes of the
    same registered model at once often both return success, so two stages that found the same
    dead holder each "removed" it and then created their own lock in turn, the second deleting
    the first's fresh lock on its way. Renaming the dead lock aside is not enough either: of two
    renames at once one fails (``RESOURCE_DOES_NOT_EXIST``, or ``BAD_REQUEST`` "expected to
    update 1 row(s); 0 were matched"), but a rename acts on whatever holds the name *now*: a stage
    that read the dead holder's tags, then stalled while another stage renamed, deleted and
    re-created the lock, renames the new live lock away, unless every renamed-aside lock stays
    forever. So the step is:

    1. create the claim ``<lock>.evict-<dead holder's nonce>`` (a create, refused to all but one);
    2. read the lock again: if it still carries that nonce, delete it;
    3. delete the claim, and go round to create the lock like everyone else.

    Why one winner, in every interleaving: the lock's occupant changes only by a create (which
    needs the name free), or by a delete in step 2 or at release (which also goes through step
    1, with the holder's own nonce). Deleting an occupant therefore needs its claim, and a claim
    has one holder at a time. So while a stage holds the claim for nonce *n*, nobody else can
    remove occupant *n*: if its re-read sees *n*, its delete removes exactly *n*, never a newer
    lock. Two stages that found the same dead holder: one creates the claim; the other is
    refused (it goes round) or creates it after the first deleted it, and then reads a lock
    that is gone or carries another nonce (nonces are never reused), so it deletes nothing.
    Both then race on step 3's create, which one wins. A holder whose lease was judged over
    cannot release a successor's lock either: its release needs the claim for its own nonce,
    and finds the lock not its own. (Outside the argument: a person deleting the lock by hand, as
    the wait's error suggests, and a register from before claims, which deletes plainly.)

    The guarantee rests on the lease, as every lease does: a participant that stalls for longer
    than ``lease_s`` (plus :data:`CLOCK_SKEW_S`, with hosts' clocks at most that far apart)
    between two of its registry calls may find its lock or claim taken over. The holder checks
    right before it moves an alias (:meth:`GateLease.check`); MLflow's alias write takes no
    condition, so a stall in the instant after that check is the one window no client-side lock
    can close.

    On a server with a login, the user must be allowed to create registered models (its creator
    gets MANAGE on the lock and on claims, so it can delete them again); taking over another
    user's dead lock needs MANAGE on it. A lock the user may not even read counts as held by a
    live stage.

    Yields:
        The :class:`GateLease` held.
    """
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    deadline = time.monotonic() + wait_s
    watch: dict[tuple[str, ...], float] = {}
    waited = False
    while True:
        me = _holder_tags(lease_s)
        since = time.monotonic()
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
            if not _lost_create(exc):
                raise
        holder: LockHolder | None = None
        try:
            holder = read_holder(client, lock)
            if holder is None and time.monotonic() < deadline:
                continue  # released between the two calls: try again
            if holder is None:
                raise RegistryError(f"could not create the gate lock {lock!r} in {wait_s:.0f} s")
            shown: Any = holder.tags
            why = expired(holder, watch)
        except MlflowException as exc:
            if refused_status(exc) is None:
                raise
            shown, why = {"user": "another user (this one may not read the lock)"}, None
        if holder is not None and why:
            log.warning("taking over the gate lock of a register stage that %s: %s", why, shown)
            if evict(client, holder, watch):
                continue
            # Another stage is removing it (or already has): wait a moment, like any waiter.
        if time.monotonic() > deadline:
            raise RegistryError(
                f"the gate of {name} has been locked by {shown} for over {wait_s:.0f} s: "
                f"if no register stage is running, delete the registered model {lock!r} "
                "(MLflow UI, or MlflowClient().delete_registered_model) and rerun"
            )
        if not waited:
            log.info("waiting for another register stage (%s) to finish its gate", shown)
            waited = True
        time.sleep(LOCK_POLL_S)
    lease = GateLease(client, lock, me["nonce"], lease_s, since)
    lease.start()
    try:
        yield lease
    finally:
        lease.stop()
        try:
            mine = LockHolder(lock, {"nonce": me["nonce"]}, 0)
            if not evict(client, mine, {}, "this stage's own gate lock"):
                log.warning("the gate lock %r was no longer this stage's to release", lock)
        except Exception as exc:  # noqa: BLE001 (a lock left behind is taken over later)
            log.warning("could not release the gate lock %r (%s)", lock, tracking.first_line(exc))


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
    with asking(f"use registered model {name!r}", "EDIT on it"), gate_lock(client, name) as lease:
        record = _gate(
            params, client, run, facts, digest, metrics, metrics_path, data_dir, lease.check
        )
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
    before_alias: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Version the candidate, judge it against the champion, move an alias (under the lock).

    ``before_alias`` runs right before the alias moves (:meth:`GateLease.check`). A failure once
    the version exists leaves it marked ``gate.decision=failed`` (:func:`_mark_failed`).
    """
    name = params.tracking.registered_model
    version = version_for(client, name, run, facts, digest)
    try:
        candidate = wait_ready(client, name, version)
        return _judge(
            params, client, run, facts, metrics, metrics_path, data_dir, candidate, before_alias
        )
    except BaseException as exc:
        _mark_failed(client, name, version, run["run_id"], exc)
        raise


def _mark_failed(client: Any, name: str, version: str, run_id: str, exc: BaseException) -> None:
    """Say on the version (and its training run) that its gate did not finish.

    ``gate.decision=failed`` and ``gate.reason`` (the error's first line), unless the version
    is the champion (the alias moved before the failure, or a rerun of a champion failed: its
    recorded promotion stands). A recorded promotion that never took effect is removed, so no
    tag says ``promoted`` of a version the alias never reached. A version that had lost an earlier
    gate keeps its ``challenger`` alias and its record. Best effort: if the registry is what
    failed, this may fail too (a warning), and a rerun resumes with the same version.
    """
    reason = f"register failed before the gate finished: {tracking.first_line(exc)}"
    try:
        with tracking.no_retries():
            champion = alias_version(client, name, CHAMPION)
            if champion is not None and str(champion.version) == version:
                return
            mv = client.get_model_version(name, version)
            client.set_model_version_tag(name, version, "gate.decision", "failed")
            client.set_model_version_tag(name, version, "gate.reason", reason)
            recorded = json.loads((mv.tags or {}).get(RECORD_TAG) or "{}")
            if recorded.get("decision") == "promoted":
                client.delete_model_version_tag(name, version, RECORD_TAG)
            client.set_tag(run_id, "gate.decision", "failed")
            client.set_tag(run_id, "gate.reason", reason)
        log.info("%s version %s is marked gate.decision=failed", name, version)
    except Exception as tag_exc:  # noqa: BLE001 (the original error is what the stage reports)
        log.warning(
            "could not mark version %s of %s as failed: %s",
            version, name, tracking.first_line(tag_exc),
        )  # fmt: skip


def _judge(
    params: Params,
    client: Any,
    run: dict[str, Any],
    facts: dict[str, str],
    metrics: dict[str, Any],
    metrics_path: str | Path,
    data_dir: str | Path,
    candidate: Any,
    before_alias: Callable[[], None],
) -> dict[str, Any]:
    """Judge the READY ``candidate`` against the champion; tag it; move an alias."""
    import pandas as pd

    from recommender.evaluation.evaluate import ndcg_by_user

    cfg, name = params.register_, params.tracking.registered_model
    bias_rmse = float(metrics["baselines"]["bias"]["rmse"])
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
    before_alias()
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
