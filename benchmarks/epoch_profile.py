"""Where an epoch of the real train stage goes: the step, validation, callbacks, logging, refit.

``benchmarks/step_cost.py`` splits one training *step* into its layers on random data; this
follows the train stage itself (``recommender.training.fit.fit`` and ``refit``, the callbacks
the stage passes, a real MLflow run in a scratch SQLite store) on the synthetic set of a given
shape, and times each part of every epoch:

- ``train pass``: the batches of the epoch (``training/loop.py``, the input pipeline
  included), from the epoch's start to the start of validation;
- ``val loss``: the loop's validation pass (RMSE on the validation part);
- ``val NDCG``: the ranking callback (every validation user ranked against the catalog);
- ``MLflow``: the epoch logger's ``log_metrics``;
- ``other``: what is left of the epoch (early stopping's weight copies, Keras' bookkeeping);

and, once per fit, building the model, the mask of users' other positives
(``set_training_positives``), the first epoch's tracing, and the refit on train + validation::

    python benchmarks/epoch_profile.py --size 1m --epochs 6 --out reports/epoch_profile.md

The load average is printed at the start and the end; above 1.5 the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from scale import SIZES, scale_params  # noqa: E402

from recommender.core.telemetry import disable_telemetry  # noqa: E402

PARTS = ("train pass", "val loss", "val NDCG", "MLflow", "other")
QUIET_LOAD = 1.5
#: What this benchmark adds to the 1-minute load average by itself (TensorFlow on both cores).
OWN_LOAD = 2.0


def load() -> tuple[float, float, float]:
    return os.getloadavg()


def timed_callback(callback: Any, key: str, spent: dict[str, list[float]]) -> Any:
    """``callback`` with the time of its ``on_epoch_end`` added to ``spent[key]``."""
    inner = callback.on_epoch_end

    def on_epoch_end(epoch: int, logs: dict | None = None) -> None:
        start = time.perf_counter()
        inner(epoch, logs)
        spent[key].append(time.perf_counter() - start)

    callback.on_epoch_end = on_epoch_end
    return callback


def profile(size: str, epochs: int, seed: int) -> dict[str, Any]:
    import keras
    import mlflow

    from recommender import tracking
    from recommender.core.config import parse_params
    from recommender.data.synthetic import generate
    from recommender.preprocess.split import preprocess
    from recommender.training import fit as fit_module
    from recommender.training import loop as loop_module

    raw = scale_params(yaml.safe_load((HERE.parent / "params.yaml").read_text()), SIZES[size])
    family = raw["train"]["model"]
    raw["train"][family] = {**raw["train"].get(family, {}), "epochs": epochs}
    raw["train"]["epochs"] = epochs
    params = parse_params(raw)
    started = time.perf_counter()
    processed = preprocess(generate(params.synthetic, params.seed), params.preprocess, seed)
    data_seconds = time.perf_counter() - started

    spent: dict[str, list[float]] = defaultdict(list)
    once: dict[str, float] = {}
    marks: dict[str, float] = {}

    class Marks(keras.callbacks.Callback):
        """Runs first: the epoch's start (validation's start and end: ``timed_validation``)."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            marks["epoch"] = time.perf_counter()
            marks.pop("test_begin", None)
            marks.pop("test_end", None)

    validation_rmse = loop_module.validation_rmse

    def timed_validation(*a: Any, **k: Any) -> Any:
        """The loop's validation pass, marking its start and end (the loop calls it between the
        epoch's batches and the callbacks' ``on_epoch_end``)."""
        inner = validation_rmse(*a, **k)

        def run() -> float:
            marks["test_begin"] = time.perf_counter()
            value = inner()
            marks["test_end"] = time.perf_counter()
            return value

        return run

    class EpochEnd(keras.callbacks.Callback):
        """Runs last: the whole epoch, and what is left once the parts are counted."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            end = time.perf_counter()
            begin = marks["epoch"]
            test_begin = marks.get("test_begin", end)
            spent["train pass"].append(test_begin - begin)
            spent["val loss"].append(marks.get("test_end", test_begin) - test_begin)
            spent["epoch"].append(end - begin)

    ranking = fit_module.validation_ranking
    fit_module.validation_ranking = lambda *a, **k: timed_callback(
        ranking(*a, **k), "val NDCG", spent
    )
    model_cls = None
    with tempfile.TemporaryDirectory() as scratch:
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        mlflow.set_experiment("epoch-profile")
        with mlflow.start_run():
            logger = timed_callback(tracking.epoch_logger(), "MLflow", spent)
            build = fit_module.build

            def timed_build(*a: Any, **k: Any) -> Any:
                nonlocal model_cls
                start = time.perf_counter()
                model = build(*a, **k)
                once["build the model"] = time.perf_counter() - start
                model_cls = type(model)
                if hasattr(model, "set_training_positives"):
                    inner = model.set_training_positives

                    def positives(*pa: Any, **pk: Any) -> Any:
                        t0 = time.perf_counter()
                        inner(*pa, **pk)
                        once["set_training_positives"] = time.perf_counter() - t0

                    model.set_training_positives = positives
                return model

            fit_module.build = timed_build
            loop_module.validation_rmse = timed_validation
            start = time.perf_counter()
            result = fit_module.fit(
                processed, params.train, params.seed, callbacks=[Marks(), logger, EpochEnd()]
            )
            once["fit, in all"] = time.perf_counter() - start
            fitted = {k: list(v) for k, v in spent.items()}
            spent.clear()
            start = time.perf_counter()
            again = fit_module.refit(
                processed, params.train, params.seed, result, callbacks=[logger]
            )
            once["refit, in all"] = time.perf_counter() - start
            once["refit epochs"] = again.epochs_run
    fit_module.validation_ranking, fit_module.build = ranking, build
    loop_module.validation_rmse = validation_rmse

    n_epochs = len(fitted["epoch"])
    rows = {}
    for part in PARTS[:-1]:
        values = fitted.get(part, [])
        rows[part] = values
    rows["other"] = [
        e - sum(fitted.get(p, [0.0] * n_epochs)[i] for p in PARTS[:-1] if fitted.get(p))
        for i, e in enumerate(fitted["epoch"])
    ]
    once["first epoch (traces)"] = fitted["epoch"][0]
    return {
        "size": size,
        "model": family,
        "class": model_cls.__name__ if model_cls else family,
        "train_rows": len(processed.train),
        "val_rows": len(processed.val),
        "batch_size": params.train.family_batch_size,
        "epochs": n_epochs,
        "data_seconds": data_seconds,
        "parts": rows,
        "epoch": fitted["epoch"],
        "once": once,
        "ratings_per_second": result.ratings_per_second,
    }


def report(result: dict[str, Any], loads: tuple[Any, Any], command: str) -> str:
    later = slice(1, None)  # the first epoch traces the graph
    epoch = result["epoch"][later] or result["epoch"]
    total = sum(epoch) / len(epoch)
    head = (
        f"# Where an epoch of the train stage goes ({result['size']}, `{result['model']}`)\n\n"
        f"Reproduce: `{command}`. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"python {platform.python_version()}. Load average at the start "
        f"{', '.join(f'{x:.1f}' for x in loads[0])}, at the end "
        f"{', '.join(f'{x:.1f}' for x in loads[1])}."
    )
    # The end's figure counts this run's own two busy threads; the start's is the machine's.
    if loads[0][0] > QUIET_LOAD or loads[1][0] > QUIET_LOAD + OWN_LOAD:
        head += f" **The machine was not quiet (load above {QUIET_LOAD}): times overstate.**"
    else:
        head += f" (The end's figure includes this run's own ~{OWN_LOAD:g}.)"
    lines = [
        head,
        "",
        f"{result['train_rows']:,} train rows, {result['val_rows']:,} validation rows, batch "
        f"{result['batch_size']:,}; {result['epochs']} epochs (mean of epochs 2 on: the first "
        f"traces); training pass {result['ratings_per_second'] or 0:,.0f} rating-epochs/s.",
        "",
        "| part of an epoch | s/epoch | share |",
        "|---|---:|---:|",
    ]
    for part in PARTS:
        values = result["parts"].get(part) or []
        values = values[later] or values
        if not values:
            continue
        mean = sum(values) / len(values)
        lines.append(f"| {part} | {mean:.2f} | {mean / total:.0%} |")
    lines += [f"| **epoch** | **{total:.2f}** | 100% |", "", "| once per fit | s |", "|---|---:|"]
    for key, value in result["once"].items():
        lines.append(f"| {key} | {value:.2f} |" if "epochs" not in key else f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1m", choices=sorted(SIZES))
    parser.add_argument("--epochs", type=int, default=6, help="the fit's epoch cap (%(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="Markdown report")
    parser.add_argument("--json", type=Path, default=None, help="raw figures")
    args = parser.parse_args(argv)
    disable_telemetry()
    before = load()
    result = profile(args.size, args.epochs, args.seed)
    after = load()
    command = f"python benchmarks/epoch_profile.py --size {args.size} --epochs {args.epochs}"
    text = report(result, (before, after), command)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({**result, "load": [before, after]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
