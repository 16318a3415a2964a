"""One family's fit-loop throughput on the preprocess stage's output, as the train stage fits it.

Issue 21 sets a target for ``biased_mf`` whatever ``train.model`` is: its fit loop at least
0.15x Surprise SVD 64x20's rating-epochs per second at 1M. ``benchmarks/scale.py`` runs this
in each size's scratch repository, between the pipeline's stages and Surprise::

    python benchmarks/family_throughput.py --processed data/processed --params params.yaml \\
        --family biased_mf --epochs 4 --out reports/family_throughput.json

The family is trained by the train stage's own ``fit`` (``training/fit.py``: built and
compiled with params.yaml's knobs, learning rate and optimizer, seeded, op determinism on, the
one training loop, the family's batch size) on the train rows without a validation part, so no
early stopping; its epoch timer gives each epoch's training pass (``epoch_seconds``).
Throughput = train rows / the median of epochs 2..N (the first traces the step). Prints the
JSON (family, rows, each epoch's seconds, rating-epochs/s, the load average before and after)
and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_FAMILY = "biased_mf"
DEFAULT_EPOCHS = 4


def median_throughput(rows: int, epoch_seconds: Sequence[float]) -> float | None:
    """Rating-epochs per second: ``rows`` / the median of epochs 2..n (the first traces);
    ``None`` with fewer than two epochs."""
    later = list(epoch_seconds)[1:]
    if not later:
        return None
    median = statistics.median(later)
    return rows / median if median > 0 else None


def _tensorflow_version() -> str:
    from importlib.metadata import version

    return version("tensorflow-cpu")


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def measure(
    processed_dir: str | Path, params_path: str | Path, family: str, epochs: int, seed: int | None
) -> dict[str, Any]:
    """Build ``family`` as the train stage does, train it ``epochs`` epochs, time each one."""
    from recommender.core.config import load_params
    from recommender.core.telemetry import disable_telemetry
    from recommender.dataset.processed import load_processed

    disable_telemetry()
    params = load_params(params_path)
    cfg = params.train.model_copy(update={"model": family})
    seed = params.seed if seed is None else seed
    processed = load_processed(processed_dir)

    from dataclasses import replace

    from recommender.training.fit import fit

    # The train stage's own fit without a validation part: no early stopping, every epoch
    # timed by its epoch timer (``epoch_seconds`` in the history).
    load_before = _load()
    result = fit(replace(processed, val=processed.val.iloc[:0]), cfg.with_epochs(epochs), seed)
    history = result.history
    seconds = history["epoch_seconds"]
    train = processed.train
    rows = len(train)
    return {
        "family": family,
        "rows": rows,
        "epochs": epochs,
        "batch_size": cfg.family_batch_size,
        "optimizer": cfg.optimizer,
        "seed": seed,
        "epoch_seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(statistics.median(seconds[1:]), 4) if len(seconds) > 1 else None,
        "throughput": median_throughput(rows, seconds),
        "loss": history["loss"],
        "load_before": load_before,
        "load_after": _load(),
        "tensorflow": _tensorflow_version(),
    }


def main(argv: list[str] | None = None) -> int:
    from recommender.core.config import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processed", default="data/processed", help="preprocess's output")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=FAMILIES)
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="at least 2 (%(default)s)"
    )
    parser.add_argument("--seed", type=int, help="default: params.yaml's seed")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces the step")
    result = measure(args.processed, args.params, args.family, args.epochs, args.seed)
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    print(
        f"[family_throughput] {args.family}: {result['rows']:,} rows, epochs "
        f"{', '.join(f'{s:.2f}' for s in result['epoch_seconds'])} s -> "
        f"{result['throughput']:,.0f} rating-epochs/s (load {result['load_before'][:1]} -> "
        f"{result['load_after'][:1]})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
