"""The gate's lock: one register stage at a time judges a registered model, across hosts.

See :func:`gate_lock` for how it is taken, renewed, and taken over from a holder that died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recommender import tracking
from recommender.core.io import pid_alive
from recommender.tracking.registry import RegistryError, asking, is_not_found, refused_status

log = logging.getLogger("recommender")

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
        if is_not_found(exc):
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
    lock = f"{name}{LOCK_SUFFIX}"
    nonce, since = _acquire(client, name, lock, wait_s, lease_s)
    lease = GateLease(client, lock, nonce, lease_s, since)
    lease.start()
    try:
        yield lease
    finally:
        lease.stop()
        _release(client, lock, nonce)


def _acquire(client: Any, name: str, lock: str, wait_s: float, lease_s: float) -> tuple[str, float]:
    """Create ``lock``, taking it over from a gone holder, waiting up to ``wait_s`` for a live
    one; return this holding's nonce and when (``time.monotonic()``) its create was sent."""
    from mlflow.exceptions import MlflowException

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
            return me["nonce"], since
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


def _release(client: Any, lock: str, nonce: str) -> None:
    """Delete ``lock`` if it is still this holding's (through a claim, as :func:`evict` does);
    a failure is only logged: a lock left behind is taken over later."""
    try:
        mine = LockHolder(lock, {"nonce": nonce}, 0)
        if not evict(client, mine, {}, "this stage's own gate lock"):
            log.warning("the gate lock %r was no longer this stage's to release", lock)
    except Exception as exc:  # noqa: BLE001 (a lock left behind is taken over later)
        log.warning("could not release the gate lock %r (%s)", lock, tracking.first_line(exc))
