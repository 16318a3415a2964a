"""A real standalone Spark cluster on 127.0.0.1 (recommender.stack.spark_cluster): a master and a
worker from the pyspark wheel, a session running a job on it through an executor, every listener
on loopback, nothing left running afterwards. Four JVMs at once; ~30-40 s on 2 busy cores."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from support import listeners

from recommender.core.config import SparkConfig
from recommender.core.processes import group_alive
from recommender.core.spark import spark_session
from recommender.stack.spark_cluster import standalone_cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def processes_naming(*words: str) -> dict[int, int]:
    """pid -> process group of each live process whose command line holds every word."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if all(w.encode() in args for w in words):
                stat = (proc / "stat").read_text().rpartition(")")[2].split()
                if stat[0] not in ("Z", "X"):
                    found[int(proc.name)] = int(stat[2])
    return found


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[2]) == pgid:
                members.append(int(stat.parent.name))
    return members


def daemon_listeners(master: int, worker: int) -> dict[int, set[tuple[str, int]]]:
    """What the master, the worker and the worker's executor JVMs listen on.

    A process listed in a group can be gone by the time its sockets are read (under load a run
    once met one: ``/proc/<pid>/net/tcp`` missing); a gone process listens on nothing and is
    left out, and the groups are listed again until the three JVMs are there (10 s at most).
    """
    found: dict[int, set[tuple[str, int]]] = {}
    for _ in range(20):
        found = {}
        for pid in [master, *group_members(worker)]:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                    found[pid] = listeners(pid)
        if len(found) >= 3:
            break
        time.sleep(0.5)
    return found


def test_a_job_runs_on_a_standalone_cluster_on_loopback_and_nothing_outlives_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with standalone_cluster() as url:
        host, _, port = url.removeprefix("spark://").partition(":")
        assert host == "127.0.0.1"
        master_words = ("org.apache.spark.deploy.master.Master", "--port", port)
        master = processes_naming(*master_words)
        worker = processes_naming("org.apache.spark.deploy.worker.Worker", url)
        assert len(master) == 1 and len(worker) == 1, (master, worker)
        # Each leads a process group of its own (stopped as one), the JVM itself.
        assert all(pid == pgid for pid, pgid in {**master, **worker}.items())
        with spark_session(SparkConfig(master=url), "test_spark_cluster") as spark:
            assert spark.sparkContext.master == url
            assert spark.range(1000).selectExpr("sum(id)").first()[0] == 999 * 1000 // 2
            # Master, worker and the worker's executor (a child in its group).
            found = daemon_listeners(next(iter(master)), next(iter(worker)))
        assert len(found) >= 3, found
        assert all(found.values()), found
        addresses = {addr for ports in found.values() for addr, _ in ports}
        assert addresses == {"127.0.0.1"}, found
        master_ports = {p for _, p in found[next(iter(master))]}
        assert int(port) in master_ports and 6066 not in master_ports  # REST server off
    for pgid in {**master, **worker}:
        assert not group_alive(pgid)
    assert not processes_naming(*master_words) and not processes_naming(url)
    assert capfd.readouterr().err == ""
