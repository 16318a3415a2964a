"""One worker's part of a ``train.distribute`` run, from the command line (tests, benchmarks).

The loop itself is :mod:`recommender.training.loop`, the same for one process and for many; the
strategy and the chief are :mod:`recommender.training.strategy`'s. Each process writes a report
of what it trained, so a test can compare the workers with the one-process run::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]},
                "task": {"type": "worker", "index": 0}}' \
        python -m recommender.training.distributed --data data/processed --params p.yaml --out r
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.config import TrainConfig
from recommender.dataset.processed import Processed
from recommender.training.fit import fit, refit
from recommender.training.loop import Ratings, validation_rmse
from recommender.training.strategy import cluster_spec, is_chief, strategy_for


def follow_chief(processed: Processed, cfg: TrainConfig, seed: int) -> None:
    """A non-chief worker's part of the train stage: the fit and refit the chief's
    :func:`recommender.training.run.train_and_log` runs, step for step (a missing one would
    leave the chief waiting in a collective), with no MLflow run and no output."""
    result = fit(processed, cfg, seed)
    if cfg.refit and len(processed.val):
        refit(processed, cfg, seed, result)


def rating_rmse(model: Any, frame: Any) -> float:
    """RMSE of the model's (clipped) predictions on a ratings frame, computed locally."""
    return validation_rmse(model, Ratings.of(frame))()


def main(argv: Sequence[str] | None = None) -> int:
    """Train one worker's part from the command line and report it (tests, benchmarks).

    Each process writes ``<out>/<task>.json`` (replicas, history, best epoch, seconds, validation
    and test RMSE) and ``<out>/<task>.npz`` (its weights, to compare workers); ``<task>`` is
    ``worker-<index>``, ``chief`` or ``local`` (no ``TF_CONFIG``). With ``train.distribute:
    none`` it is the same loop in one process without a strategy of its own.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", required=True, help="the preprocess stage's folder")
    parser.add_argument("--params", required=True, help="a params.yaml (its seed and train)")
    parser.add_argument("--out", required=True, help="folder for this worker's report")
    args = parser.parse_args(argv)

    from recommender.core.config import load_params
    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    params = load_params(args.params)
    cfg = params.train
    replicas = 1
    task = "local"
    if cfg.distribute != "none":
        replicas = strategy_for(cfg.distribute).num_replicas_in_sync
        if cfg.distribute == "multi_worker":
            spec = cluster_spec()["task"]
            task = "chief" if spec["type"] == "chief" else f"worker-{spec['index']}"

    from recommender.dataset.processed import load_processed

    processed = load_processed(args.data)
    result = fit(processed, cfg, params.seed, verbose=0)
    history = result.history
    report = {
        "task": task,
        "chief": is_chief(cfg.distribute),
        "distribute": cfg.distribute,
        "model": cfg.model,
        "num_replicas_in_sync": replicas,
        "train_rows": result.train_rows,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "ratings_per_second": result.ratings_per_second,
        "best_val_rmse": history["val_rmse"][result.best_epoch - 1]
        if "val_rmse" in history
        else None,
        "val_rmse": rating_rmse(result.model, processed.val) if len(processed.val) else None,
        "test_rmse": rating_rmse(result.model, processed.test),
        "history": history,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{task}.npz", *result.model.get_weights())
    (out / f"{task}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    # ``python -m`` runs this file as ``__main__``, a second copy of the module beside the
    # ``recommender.training.distributed`` that ``fit`` imports, each with its own
    # ``_strategies``: this copy's main() and that copy's fit() would make a strategy each. A
    # second MultiWorkerMirroredStrategy gives the running gRPC server a new collective state
    # (TensorFlow's UpdateServerDef, with no barrier with the peers), so a peer's first collective
    # that reached the old one is lost and both workers wait in their first broadcast forever.
    # So main() runs from the imported module, whose cache fit() shares.
    from recommender.training.distributed import main as imported_main

    sys.exit(imported_main())
