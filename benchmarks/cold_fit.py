"""Fit one family in a fresh process, so its time includes TensorFlow's start-up.

Started by ``benchmarks/run.py`` as a subprocess (the parent times it from spawn to exit)::

    python benchmarks/cold_fit.py --data DIR --params params.yaml --family biased_mf

``--data`` is a folder the preprocess stage's writer produced. Fits as the train stage does:
early stopping on the validation part, then (``train.refit``) again on train + val for the best
epoch count. Prints one JSON object with the in-process breakdown: ``import_seconds``
(TensorFlow and Keras), ``fit_seconds``, ``refit_seconds``, ``epochs_run``, ``best_epoch``. The
timer starts before any heavy import.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="preprocessed folder (train/val parquet)")
    parser.add_argument("--params", required=True, help="params file: train section and seed")
    parser.add_argument("--family", required=True, help="train.model to fit")
    args = parser.parse_args(argv)

    import keras  # noqa: F401  (start-up cost measured on its own)
    import tensorflow  # noqa: F401

    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()  # before Keras loads

    imported = time.perf_counter()
    from recommender.core.config import TrainConfig, load_params
    from recommender.dataset.processed import load_processed
    from recommender.training.fit import fit, refit

    params = load_params(args.params)
    processed = load_processed(args.data)
    loaded = time.perf_counter()
    cfg = TrainConfig.model_validate({**params.train.model_dump(), "model": args.family})
    result = fit(processed, cfg, params.seed)
    refit_seconds = 0.0
    if cfg.refit and len(processed.val):  # as the train stage does
        refit_seconds = refit(processed, cfg, params.seed, result).seconds
    done = time.perf_counter()
    out = {
        "family": args.family,
        "import_seconds": imported - START,
        "load_seconds": loaded - imported,
        "fit_seconds": result.seconds,
        "refit_seconds": refit_seconds,
        "build_and_fit_seconds": done - loaded,
        "in_process_seconds": done - START,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
