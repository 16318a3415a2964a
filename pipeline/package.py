"""DVC stage ``package``: the registry's ``champion`` into the BentoML store, built into a Bento.

    python pipeline/package.py --serving serving --bentoml-home bentoml \\
        --requirements requirements.lock --out reports/package.json

Idempotent: the same champion version is not imported again, and the same service files, model
and limits give back the existing Bento. Writes the Bento tag and the model version it carries to
``--out``. Containerizing needs Docker: ``bentoml containerize <bento tag>`` (see the README).
"""

from __future__ import annotations

import argparse
import sys

from recommender.core.config import Params
from recommender.core.stage import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serving", required=True, help="folder of service.py and bentofile.yaml")
    parser.add_argument("--bentoml-home", required=True, help="the BentoML store (BENTOML_HOME)")
    parser.add_argument("--requirements", help="pinned requirements the Bento installs")
    parser.add_argument("--out", required=True, help="JSON record of what was packaged")


def body(params: Params, args: argparse.Namespace) -> None:
    from recommender.serving.packaging import package

    package(params, args.serving, args.out, args.bentoml_home, args.requirements)


if __name__ == "__main__":
    sys.exit(run_stage("package", body, configure))
