"""What every ``pipeline/*.py`` entry point shares: argument parsing, params, and error exits."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from recommender.core.config import Params, load_params
from recommender.core.errors import RecommenderError
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
    traceback: the message is meant for the user and already names what to fix.
    """
    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py", description=f"DVC stage '{name}'.")
    parser.add_argument("--params", default="params.yaml", help="params file (%(default)s)")
    if configure:
        configure(parser)
    args = parser.parse_args(argv)
    disable_telemetry()
    # Our own progress at INFO; the libraries (GX, MLflow, BentoML) only when they warn.
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    try:
        body(load_params(args.params), args)
    except RecommenderError as exc:
        print(f"error: stage '{name}' failed: {exc}", file=sys.stderr)
        return 1
    return 0
