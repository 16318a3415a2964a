"""A standalone Spark cluster on 127.0.0.1: one master and one worker, from the pyspark wheel.

    with standalone_cluster(cores=2, memory="2g") as master_url:   # spark://127.0.0.1:<port>
        with spark_session(SparkConfig(master=master_url), "ingest") as spark:
            ...

The wheel ships Spark's jars and ``bin/spark-class`` but no ``sbin/start-*.sh``: the master and
the worker run as ``spark-class`` processes in the foreground (``SPARK_NO_DAEMONIZE=1``), each in a
process group of its own whose leader is the JVM (``spark-class`` and the generated ``bin/java``
both ``exec``); the worker's executors are its children, in its group. They start with the
drivers' Java, Spark and quiet log config (:func:`recommender.core.spark.spark_env`). Every
listener is on 127.0.0.1 (RPC ports and web UIs on free ports chosen here); the master's REST
submission server, on by default (port 6066), is off.

The folder (a temporary one unless given) holds ``master.log``, ``worker.log`` and ``work/``, the
worker's executors' own logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from recommender.core.errors import RecommenderError
from recommender.core.processes import (
    LOOPBACK,
    NotReady,
    free_ports,
    start_in_group,
    stop_group,
    wait_until,
)
from recommender.core.spark import spark_env, spark_home
from recommender.core.telemetry import QUIET, TELEMETRY_OFF

#: Master and worker answer in ~5 and ~11 s on 2 busy cores (a worker registers only once the
#: master listens: a refused first try waits 5-15 s to retry).
START_TIMEOUT_S = 120
#: They stop in ~2 s on SIGTERM.
STOP_TIMEOUT_S = 30
#: The master's and the worker's own heap (``SPARK_DAEMON_MEMORY``; Spark's default is 1g).
DAEMON_MEMORY = "256m"
_MASTER = "org.apache.spark.deploy.master.Master"
_WORKER = "org.apache.spark.deploy.worker.Worker"


class SparkClusterError(RecommenderError):
    """The cluster could not be started (the message says why and quotes its logs)."""


@dataclass
class SparkCluster:
    """A running master and worker started by :func:`start_standalone_cluster`; a context
    manager that stops them.

    Attributes:
        master_url: What drivers connect to, ``spark://127.0.0.1:<port>``.
        web_url: The master's web UI (``/json/``: its state as JSON).
        folder: Logs and the worker's work folder (see the module docstring).
    """

    master_url: str
    web_url: str
    folder: Path
    master: subprocess.Popen = field(repr=False)
    worker: subprocess.Popen | None = field(default=None, repr=False)
    #: Remove ``folder`` at stop (it was made here).
    owns_folder: bool = field(default=False, repr=False)

    @property
    def pids(self) -> list[int]:
        """The master's and the worker's process (and group) ids."""
        return [p.pid for p in (self.master, self.worker) if p is not None]

    def alive_workers(self) -> int | None:
        """The workers the master counts alive, None if it does not answer."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.web_url + "/json/", timeout=5) as resp:
                return int(json.load(resp)["aliveworkers"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the worker's group (its executors too), then the master's; SIGKILL to
        what is left after ``timeout``; idempotent."""
        if self.worker is not None:
            stop_group(self.worker, timeout)
        stop_group(self.master, timeout)
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tails(self, chars: int = 3000) -> str:
        """The end of each log, for error messages."""
        tails = []
        for name in ("master.log", "worker.log"):
            log = self.folder / name
            if log.is_file():
                tails.append(f"--- the end of {log}:\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(tails)

    def __enter__(self) -> SparkCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _daemon_env(folder: Path, daemon_memory: str) -> dict[str, str]:
    env = {**os.environ, **TELEMETRY_OFF, **QUIET, **spark_env()}
    # The REST submission server: port 6066 by default, on every interface's host name.
    master_opts = f"{env.get('SPARK_MASTER_OPTS', '')} -Dspark.master.rest.enabled=false"
    env.update(
        SPARK_NO_DAEMONIZE="1",
        SPARK_DAEMON_MEMORY=daemon_memory,
        SPARK_WORKER_DIR=str(folder / "work"),
        SPARK_LOG_DIR=str(folder),
        SPARK_PID_DIR=str(folder),
        SPARK_MASTER_OPTS=master_opts.strip(),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def start_standalone_cluster(
    folder: str | Path | None = None,
    *,
    cores: int = 2,
    memory: str = "2g",
    daemon_memory: str = DAEMON_MEMORY,
    timeout: float = START_TIMEOUT_S,
) -> SparkCluster:
    """Start a master and one worker on 127.0.0.1; return once the master counts the worker.

    Args:
        folder: Logs and work folder (created; default: a temporary folder, removed at stop).
        cores: The cores the worker offers executors.
        memory: The memory the worker offers executors (a JVM size, e.g. ``2g``); a driver's
            ``spark.executor.memory`` must fit in it.
        daemon_memory: The master's and the worker's own heap.
        timeout: Seconds to wait for the master to count the worker alive.

    Raises:
        SparkClusterError: Either exited or was not ready in time (with the end of their logs).
        recommender.core.errors.ConfigError: No Java 17+ or no pyspark.
    """
    owns = folder is None
    folder = Path(tempfile.mkdtemp(prefix="spark-cluster-") if folder is None else folder)
    folder = folder.resolve()
    (folder / "work").mkdir(parents=True, exist_ok=True)
    env = _daemon_env(folder, daemon_memory)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, web_port, worker_port, worker_web_port = free_ports(4)
    master = start_in_group(
        [spark_class, _MASTER, "--host", LOOPBACK, "--port", str(port),
         "--webui-port", str(web_port)],
        folder / "master.log", env=env, cwd=folder,
    )  # fmt: skip
    cluster = SparkCluster(
        f"spark://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{web_port}", folder, master,
        owns_folder=owns,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        _wait(cluster, deadline, workers=0)
        cluster.worker = start_in_group(
            [spark_class, _WORKER, cluster.master_url, "--host", LOOPBACK,
             "--port", str(worker_port), "--webui-port", str(worker_web_port),
             "--cores", str(cores), "--memory", memory, "--work-dir", str(folder / "work")],
            folder / "worker.log", env=env, cwd=folder,
        )  # fmt: skip
        _wait(cluster, deadline, workers=1)
    except NotReady as exc:
        tails = cluster.log_tails()  # before stop() removes a temporary folder
        cluster.stop()
        raise SparkClusterError(f"{exc}\n{tails}") from None
    except BaseException:
        cluster.stop()  # never leave half a cluster behind
        raise
    return cluster


def _wait(cluster: SparkCluster, deadline: float, workers: int) -> None:
    """Until the master answers (and counts ``workers`` alive); :class:`NotReady` if a process
    exits first or the ``time.monotonic()`` deadline passes."""
    what = f"the Spark master at {cluster.master_url}"
    if workers:
        what = f"a Spark worker registering with {what.removeprefix('the ')}"

    def ready() -> bool:
        for name, proc in (("master", cluster.master), ("worker", cluster.worker)):
            if proc is not None and proc.poll() is not None:
                raise NotReady(f"the Spark {name} exited with {proc.returncode}", proc.returncode)
        alive = cluster.alive_workers()
        return alive is not None and alive >= workers

    wait_until(ready, timeout=max(deadline - time.monotonic(), 0), interval=0.5, what=what)


@contextlib.contextmanager
def standalone_cluster(
    cores: int = 2,
    memory: str = "2g",
    *,
    folder: str | Path | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """A master and one worker on 127.0.0.1 for the block (:func:`start_standalone_cluster`);
    yields the master's URL, ``spark://127.0.0.1:<port>``, and stops both after the block."""
    with start_standalone_cluster(folder, cores=cores, memory=memory, timeout=timeout) as cluster:
        yield cluster.master_url


def main(argv: list[str] | None = None) -> int:
    """``python -m recommender.stack.spark_cluster`` (``make spark-cluster``): a master and a
    worker on 127.0.0.1 in the foreground, until Ctrl-C; run the pipeline against the URL it
    prints (``dvc exp run -S data.engine=spark -S spark.master=<url>``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cores", type=int, default=2, help="the worker's cores")
    parser.add_argument("--memory", default="2g", help="the worker's memory for executors")
    args = parser.parse_args(argv)
    with start_standalone_cluster(cores=args.cores, memory=args.memory) as cluster:
        print(f"Spark master {cluster.master_url}, web UI {cluster.web_url}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while cluster.master.poll() is None:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
