"""When the gate lock's holder counts as gone: the rules alone, on hand-made holders (no MLflow).

The lock against real registries, races included, is in tests/integration/test_gate_lock.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from recommender.tracking.gate_lock import CLOCK_SKEW_S, LOCK_LEASE_S, LockHolder, expired

HERE = socket.gethostname()


def _dead_pid() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return str(proc.pid)


def holder(created_s_ago: float = 0.0, **tags: object) -> LockHolder:
    created_ms = int((time.time() - created_s_ago) * 1000)
    return LockHolder("m.gate-lock", {k: str(v) for k, v in tags.items()}, created_ms)


def lease(ends_in: float, **tags: object) -> LockHolder:
    return holder(nonce="n1", lease_s=LOCK_LEASE_S, lease_until=f"{time.time() + ends_in}", **tags)


def test_a_holder_on_this_host_whose_process_is_gone_is_gone_at_once() -> None:
    assert "died" in (expired(lease(LOCK_LEASE_S, host=HERE, pid=_dead_pid()), {}) or "")
    assert expired(lease(LOCK_LEASE_S, host=HERE, pid=os.getpid()), {}) is None
    # The same pid on another host says nothing about that host's process.
    assert expired(lease(LOCK_LEASE_S, host="elsewhere", pid=_dead_pid()), {}) is None


def test_a_lease_counts_as_over_only_after_the_clock_skew_allowance() -> None:
    assert expired(lease(-(CLOCK_SKEW_S - 5), host="elsewhere", pid=1), {}) is None
    why = expired(lease(-(CLOCK_SKEW_S + 5), host="elsewhere", pid=1), {})
    assert why is not None and "stopped renewing its lease" in why
    # A live holder on this host whose lease ended (stopped, or cut off from the registry).
    assert expired(lease(-(CLOCK_SKEW_S + 5), host=HERE, pid=os.getpid()), {}) is not None


def test_a_lease_unchanged_for_a_whole_watched_lease_is_over_whatever_the_clocks_say() -> None:
    ahead = lease(7 * 86400, host="elsewhere", pid=1)  # its holder's clock runs a week ahead
    watch: dict[tuple[str, ...], float] = {}
    assert expired(ahead, watch) is None  # first seen now
    key = next(iter(watch))
    watch[key] = time.monotonic() - (LOCK_LEASE_S + CLOCK_SKEW_S + 1)  # ... a lease ago
    why = expired(ahead, watch)
    assert why is not None and "has not renewed its lease" in why
    # A renewal is a new lease end: watched afresh.
    assert expired(lease(7 * 86400 + 40, host="elsewhere", pid=1), watch) is None


def test_a_lock_from_before_leases_lasts_one_lease_from_its_creation() -> None:
    old = holder(created_s_ago=LOCK_LEASE_S + CLOCK_SKEW_S + 5, host="elsewhere", pid=1)
    assert old.identity.startswith("created-") and old.lease_s == LOCK_LEASE_S
    assert expired(old, {}) is not None
    assert expired(holder(created_s_ago=5, host="elsewhere", pid=1), {}) is None


def test_each_holding_has_an_identity_of_its_own() -> None:
    assert lease(1).identity == "n1"
    assert holder(nonce="n2").identity == "n2"
    assert holder(lease_until="garbage").lease_until > time.time()  # unreadable: from creation
