"""What every ``pipeline/*.py`` entry point shares: argument parsing, params, and error exits."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from recommender.core.config import Params, load_params
from recommender.core.disk import full_disk
from recommender.core.errors import RecommenderError, lost_tracking_server
from recommender.core.io import pid_alive
from recommender.core.redaction import redacted_output
from recommender.core.telemetry import disable_telemetry

log = logging.getLogger("recommender")


def run_stage(
    name: str,
    body: Callable[[Params, argparse.Namespace], None],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``--params`` (and the stage's own arguments), load params, run ``body``.

    A :class:`RecommenderError` becomes ``error: <message>`` on stderr and exit code 1, with no
    traceback: the message is meant for the user and already names what to fix. Whatever the stage
    writes to ``sys.stdout`` and ``sys.stderr`` goes through :func:`redacted_output`.
    """
    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py", description=f"DVC stage '{name}'.")
    parser.add_argument("--params", default="params.yaml", help="params file (%(default)s)")
    if configure:
        configure(parser)
    args = parser.parse_args(argv)
    disable_telemetry()
    # At exit, Python's last collections walk every object the libraries left alive: 1.5-2 s
    # of CPU once TensorFlow and MLflow are loaded (~600k objects), 0.2-0.5 s with MLflow
    # alone, to free memory the OS takes back anyway. Frozen objects are skipped. Registered
    # before the libraries load, it runs after their exit handlers (MLflow's, temp files').
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    with redacted_output():
        # Our own progress at INFO; the libraries (GX, MLflow, BentoML) only when they warn.
        logging.basicConfig(
            level=logging.WARNING, format=f"[{name}] %(message)s", stream=sys.stderr
        )
        log.setLevel(logging.INFO)
        try:
            with private_tempdir(name), fewer_collections():
                body(load_params(args.params), args)
        except RecommenderError as exc:
            print(f"error: stage '{name}' failed: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            # A tracking server that died mid-stage, or a full disk: one line, not a library's
            # traceback (MLflow folds one [Errno 28] per file into its message; shutil lists
            # them all).
            message = lost_tracking_server(exc) or full_disk(exc)
            if message is None:
                raise
            print(f"error: stage '{name}' failed: {message}", file=sys.stderr)
            return 1
    return 0


#: Objects allocated (net) between two young-generation collections during a stage, instead of
#: Python's 700. Importing TensorFlow, Keras and MLflow creates ~550k long-lived objects; at 700
#: the collector ran 1280 times on the way, 8 of them over the whole heap: 1.25-1.5 s of CPU,
#: against 0.5 s at 10k (89 runs). Garbage in reference cycles waits for at most 10k allocations.
GC_THRESHOLD = 10_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the young generation collected every :data:`GC_THRESHOLD` net
    allocations; the previous thresholds come back after it."""
    saved = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


#: ``<temp>/recommender-<stage>-<pid>-*``: one private temporary folder per stage process.
SCRATCH_PREFIX = "recommender-"


@contextlib.contextmanager
def private_tempdir(stage: str) -> Iterator[Path]:
    """Route every temporary file of the stage (ours, MLflow's, BentoML's) into one folder.

    The folder goes when the stage ends, however it ends, short of SIGKILL; the folders that
    killed stages left behind (their pid no longer runs) go when the next stage starts.
    """
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{SCRATCH_PREFIX}*-*-*"):
        pid = old.name[len(SCRATCH_PREFIX) :].split("-")[1]
        if old.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{stage}-{os.getpid()}-", dir=base))
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(tmp, ignore_errors=True)
