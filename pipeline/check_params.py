"""DVC stage ``check_params``: stop the pipeline on a typo anywhere in ``params.yaml``.

    python pipeline/check_params.py --out reports/params_check.txt [--params params.yaml]

Each stage validates the whole file when it runs, but DVC reruns a stage only when the keys it
declares change: a misspelled key outside them (a top-level ``trian:``, ``tune.n_trails``) would let
``dvc repro`` pass and some later stage fail on it. ``ingest`` depends on this stage's output, and
this stage on ``params.yaml``'s bytes and the loader's code, so the strict check runs first in every
``dvc repro`` after any edit of the file (a changed type included), and a no-op ``dvc repro``
skips it. The output's bytes never change, so a passing check reruns nothing downstream.
Light imports only (pydantic, PyYAML).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recommender.core.config import Params
from recommender.core.stage import run_stage

#: The output's whole content: the same bytes on every run, whatever the params.
PASSED = "params.yaml: every key known, every value of its type (pipeline/check_params.py)\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="marker file ingest depends on")


def check_params(params: Params, args: argparse.Namespace) -> None:
    # run_stage has loaded --params with the strict loader: reaching here means it passed.
    from recommender.core.io import staged_file

    out = Path(args.out)
    if out.is_file() and out.read_text() == PASSED:
        return  # already in place: leave the file (and its timestamp) alone
    with staged_file(out) as tmp:
        tmp.write_text(PASSED)


if __name__ == "__main__":
    sys.exit(run_stage("check_params", check_params, configure))
