"""The gate lock against real MLflow registries: a SQLite store, and a real ``mlflow server``.

No model is trained: the lock is what these tests judge, so the gate is reduced to its registry
writes (``lock_contender.py``). Each test uses registered model names of its own.

* Two registers at once after a crashed one, twenty trials, in real processes: the crashed
  holder's lock is taken over by one of them, the gates never overlap, and the second promotes
  over the first's champion (never two promotions over one champion; every version tagged
  ``promoted`` is the champion or was replaced by a later promotion).
* Leases: a lock from another host whose lease ended is taken over with no manual step; a live
  lease there is waited on (and renewal keeps a short lease alive); a lease left to run out is
  taken over once it ends; a holder whose clock runs ahead is taken over after one watched lease.
* The takeover's one-winner step in the interleavings a race rarely hits: a taker that read the
  dead holder before another took over never removes the new lock; a claim left by a taker
  that crashed is removed too; a holder that lost its lock neither publishes nor releases its
  successor's lock.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import start_mlflow_server
from support import child_env, stop

from recommender.tracking import gate_lock as lock_module
from recommender.tracking.gate_lock import (
    EVICT_INFIX,
    LOCK_SUFFIX,
    evict,
    gate_lock,
    read_holder,
)
from recommender.tracking.registry import CHAMPION, RegistryError, alias_version

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HERE = Path(__file__).resolve().parent
#: Trials of the race; each takes one to three seconds.
TRIALS = 20


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('lock-sqlite') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("lock-server")
    proc, server = start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder)
    try:
        yield server.uri
    finally:
        stop(proc)


@pytest.fixture(params=["sqlite", "server"])
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(label, uri)`` of a SQLite store used directly, and of a real ``mlflow server``."""
    return request.param, request.getfixturevalue(f"{request.param}_uri")


def _client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _dead_pid() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return str(proc.pid)


def _holder(**tags: Any) -> dict[str, str]:
    """Tags of a holding as a register stage writes them (a fresh lease), ``tags`` changed."""
    fresh = {
        "host": socket.gethostname(),
        "pid": _dead_pid(),
        "nonce": uuid.uuid4().hex[:16],
        "lease_s": "120",
        "lease_until": f"{time.time() + 120:.3f}",
    }
    return {**fresh, **{k: str(v) for k, v in tags.items()}}


def _leftovers(client: Any, name: str) -> list[str]:
    """The lock and any claims on removing it that exist now."""
    found = client.search_registered_models(f"name LIKE '{name}{LOCK_SUFFIX}%'")
    return sorted(m.name for m in found)


def _with_versions(client: Any, name: str, count: int) -> None:
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )


# --- two registers at once after a crashed one ---------------------------------------------------


def _contenders(uri: str, count: int, cwd: Path) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "lock_contender.py"), uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=child_env(),
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert json.loads(proc.stdout.readline() or "{}").get("ready"), "a contender did not start"
    return procs


def test_two_registers_after_a_crashed_one_promote_one_after_the_other(
    store: tuple[str, str], tmp_path: Path
) -> None:
    label, uri = store
    client = _client(uri)
    rng = random.Random(20)
    procs = _contenders(uri, 2, tmp_path)
    outcomes = []
    try:
        for trial in range(TRIALS):
            name = f"race-{label}-{trial}"
            _with_versions(client, name, 2)
            # The crashed register: its lock, its pid gone, its lease fresh (it died just now).
            client.create_registered_model(name + LOCK_SUFFIX, tags=_holder())
            start = time.time() + 0.2
            versions = ["1", "2"] if trial % 2 else ["2", "1"]
            for proc, version in zip(procs, versions, strict=True):
                # Jitter up to 60 ms: from both at once to one arriving mid-takeover.
                line = {"name": name, "version": version, "start": start}
                line.update(jitter=rng.uniform(0.0, 0.06), hold=0.1)
                proc.stdin.write(json.dumps(line) + "\n")
                proc.stdin.flush()
            answers = [json.loads(proc.stdout.readline()) for proc in procs]
            assert all("error" not in a for a in answers), (trial, answers)

            first, second = sorted(answers, key=lambda a: a["entered"])
            # One gate at a time: the second entered after the first had moved the alias.
            assert first["left"] <= second["entered"], (trial, answers)
            # Never two promotions over one champion: the second gated against the first.
            assert (first["over"], second["over"]) == (None, first["version"]), (trial, answers)
            champion = alias_version(client, name, CHAMPION)
            assert champion is not None and str(champion.version) == second["version"]
            tagged = {
                str(mv.version)
                for mv in client.search_model_versions(f"name = '{name}'")
                if mv.tags.get("gate.decision") == "promoted"
            }
            replaced = {a["over"] for a in answers}
            # Every version tagged promoted is the champion, or a later promotion replaced it.
            assert tagged - replaced == {str(champion.version)}, (trial, tagged, replaced)
            assert _leftovers(client, name) == []
            outcomes.append(round(second["entered"] - first["entered"], 3))
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=30)
    print(f"{label}: {TRIALS} trials, second gate entered after the first by (s): {outcomes}")


# --- leases --------------------------------------------------------------------------------------


def test_a_lock_from_another_host_whose_lease_ended_is_taken_over(
    store: tuple[str, str],
) -> None:
    label, uri = store
    client = _client(uri)
    name = f"expired-{label}"
    lock = name + LOCK_SUFFIX
    gone = _holder(host="build-agent-7", pid=4242, lease_until=f"{time.time() - 600:.3f}")
    client.create_registered_model(lock, tags=gone)

    started = time.monotonic()
    with gate_lock(client, name, wait_s=30) as lease:
        took = time.monotonic() - started
        holder = read_holder(client, lock)
        assert holder is not None and holder.identity == lease.nonce != gone["nonce"]
        assert holder.tags["host"] == socket.gethostname()
    assert took < 10  # no wait for a lease that ended ten minutes ago
    assert _leftovers(client, name) == []


def test_a_live_lease_on_another_host_is_waited_on(store: tuple[str, str]) -> None:
    label, uri = store
    client = _client(uri)
    name = f"live-{label}"
    lock = name + LOCK_SUFFIX
    live = _holder(host="build-agent-7", pid=4242)  # a lease that ends in two minutes
    client.create_registered_model(lock, tags=live)

    started = time.monotonic()
    with pytest.raises(RegistryError) as caught, gate_lock(client, name, wait_s=2):
        pytest.fail("took a lock whose lease is live")
    assert time.monotonic() - started >= 2
    message = str(caught.value)
    assert f"the gate of {name} has been locked by " in message and "build-agent-7" in message
    assert (
        f"for over 2 s: if no register stage is running, delete the registered model {lock!r}"
        in message
    )
    assert message.endswith("and rerun")
    holder = read_holder(client, lock)
    assert holder is not None and holder.identity == live["nonce"]  # untouched
    client.delete_registered_model(lock)


def test_a_renewed_lease_outlives_its_length(
    sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_module, "CLOCK_SKEW_S", 0.2)
    client = _client(sqlite_uri)
    name = "renewed"
    lock = name + LOCK_SUFFIX
    holding, done, seen = threading.Event(), threading.Event(), []

    def hold() -> None:
        with gate_lock(client, name, lease_s=1.0):
            holding.set()
            for _ in range(8):  # four leases long
                time.sleep(0.5)
                seen.append(read_holder(client, lock).tags["lease_until"])
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with (
            pytest.raises(RegistryError, match="has been locked by"),
            gate_lock(client, name, wait_s=3),
        ):
            pytest.fail("took a lock whose holder renews its lease")
    finally:
        done.set()
        holder.join(30)
    assert len(set(seen)) >= 4  # renewed every third of the lease
    with gate_lock(client, name, wait_s=1):  # released: taken at once
        pass
    assert not [t for t in threading.enumerate() if t.name.startswith("lease ")]


@pytest.mark.parametrize(
    ("case", "tags"),
    [
        ("runs-out", {"lease_s": 1, "lease_until": "in 1 s"}),
        ("clock-ahead", {"lease_s": 1, "lease_until": "in a week"}),
        ("no-lease-tags", {}),
    ],
)
def test_a_lease_nobody_renews_is_taken_over_once_it_ends(
    sqlite_uri: str, monkeypatch: pytest.MonkeyPatch, case: str, tags: dict[str, Any]
) -> None:
    """A lease left to run out; one whose holder's clock runs a week ahead (its end is never
    reached here, but it never changes for a whole lease); a lock from before leases (its
    creation plus a lease), all held on another host."""
    monkeypatch.setattr(lock_module, "CLOCK_SKEW_S", 0.5)
    monkeypatch.setattr(lock_module, "LOCK_LEASE_S", 1.0)
    client = _client(sqlite_uri)
    name = f"unrenewed-{case}"
    ends = {"in 1 s": time.time() + 1, "in a week": time.time() + 7 * 86400}
    lease = {k: f"{ends[v]:.3f}" if v in ends else v for k, v in tags.items()}
    if case == "no-lease-tags":
        left = {"host": "build-agent-7", "pid": "4242"}
    else:
        left = _holder(host="build-agent-7", pid=4242, **lease)
    client.create_registered_model(name + LOCK_SUFFIX, tags=left)

    started = time.monotonic()
    with gate_lock(client, name, wait_s=30):
        took = time.monotonic() - started
    assert 1.0 <= took < 10, took
    assert _leftovers(client, name) == []


# --- the one-winner step, interleaving by interleaving --------------------------------------------


def test_a_taker_that_read_the_dead_holder_late_never_removes_the_new_lock(
    sqlite_uri: str,
) -> None:
    client = _client(sqlite_uri)
    name = "late-taker"
    lock = name + LOCK_SUFFIX
    client.create_registered_model(lock, tags=_holder())
    stale = read_holder(client, lock)  # a taker reads the dead holder ... and stalls
    assert stale is not None

    with gate_lock(client, name, wait_s=10) as lease:  # meanwhile another takes over
        assert evict(client, stale, {}) is False  # ... the stalled taker wakes up: nothing
        holder = read_holder(client, lock)
        assert holder is not None and holder.identity == lease.nonce
        lease.check()
    assert _leftovers(client, name) == []


def test_a_claim_left_by_a_taker_that_crashed_is_removed_too(sqlite_uri: str) -> None:
    client = _client(sqlite_uri)
    name = "crashed-taker"
    lock = name + LOCK_SUFFIX
    dead = _holder()
    client.create_registered_model(lock, tags=dead)
    # A taker created its claim on removing the dead holder, then died too.
    client.create_registered_model(f"{lock}{EVICT_INFIX}{dead['nonce']}", tags=_holder())
    assert len(_leftovers(client, name)) == 2

    with gate_lock(client, name, wait_s=10) as lease:
        assert read_holder(client, lock).identity == lease.nonce
    assert _leftovers(client, name) == []


def test_a_holder_that_lost_its_lock_neither_publishes_nor_releases_the_new_one(
    sqlite_uri: str,
) -> None:
    client = _client(sqlite_uri)
    name = "lost-lock"
    lock = name + LOCK_SUFFIX
    successor = _holder(pid=os.getpid())  # alive: nobody takes it over
    lost = pytest.raises(RegistryError, match=f"lost the gate lock {lock!r}")
    with lost, gate_lock(client, name, wait_s=10) as lease:
        # Another stage judged this one gone (it stalled past its lease) and took over.
        mine = read_holder(client, lock)
        assert mine is not None and evict(client, mine, {}) is True
        client.create_registered_model(lock, tags=successor)
        lease.check()  # what the gate calls right before it moves an alias
        pytest.fail("published after losing the lock")
    holder = read_holder(client, lock)
    assert holder is not None and holder.identity == successor["nonce"]  # still the successor's
    client.delete_registered_model(lock)
