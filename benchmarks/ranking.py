"""Ranking benchmark: every family against popularity and EASE on MovieLens-100K's five folds.

    python benchmarks/ranking.py --ml100k ../shared/data/ml-100k --params params.yaml \
        --out reports/bench_ranking.md --json reports/bench_ranking.json

For each canonical fold (``u1`` .. ``u5``: ``uN.base`` / ``uN.test``, read in place) it runs the
library's own path, as the pipeline does: ``load_dataset`` (``ingest.ml100k_fold``), ``preprocess``
with ``split: given`` (a ``preprocess.val_fraction`` validation part carved from ``uN.base``),
``training.fit`` (early stopping on the validation part) and ``training.refit`` on train + val
(``train.refit``), then ``evaluation.evaluate``: the same protocol as ``reports/metrics.json``
(relevant = test rating >= ``evaluate.relevance_threshold``, candidates = every item the user did
not rate in training, K = ``evaluate.k``), with popularity and EASE (its lambda chosen on the
validation part) measured on the same users in the same run. The test folds choose nothing.

The headline is the mean over the folds with its standard deviation; differences under ~0.02
NDCG@10 are within one fold's noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FOLDS = ("u1", "u2", "u3", "u4", "u5")
#: What the table shows, from each ``metrics.json``-shaped result.
COLUMNS = ("ndcg@10", "precision@10", "recall@10", "coverage@10")


def _fold_params(params: Any, ml100k: Path, fold: str) -> Any:
    from recommender.core.config import parse_params

    raw = params.model_dump(by_alias=True)
    raw["data"] = {"source": "movielens-100k", "path": str(ml100k), "download": False}
    raw["ingest"] = {**raw["ingest"], "ml100k_fold": fold}
    raw["preprocess"] = {**raw["preprocess"], "split": "given"}
    return parse_params(raw, f"benchmark params ({fold})")


def run_fold(params: Any, ml100k: Path, fold: str, families: list[str]) -> dict[str, Any]:
    """Every family on one fold, plus the baselines of the first family's evaluation."""
    import keras

    from recommender.core.config import TrainConfig
    from recommender.data import load_dataset
    from recommender.dataset.processed import with_val_in_train
    from recommender.evaluation.evaluate import evaluate
    from recommender.preprocess.split import preprocess
    from recommender.scoring.bundle import ModelBundle
    from recommender.training.fit import refit
    from recommender.training.search import search

    bench = _fold_params(params, ml100k, fold)
    processed = preprocess(load_dataset(bench), bench.preprocess, bench.seed)
    out: dict[str, Any] = {"families": {}}
    for family in families:
        cfg = TrainConfig.model_validate({**bench.train.model_dump(), "model": family})
        print(f"[ranking] {fold} {family}: fit ...", file=sys.stderr)
        found = search(processed, cfg, bench.seed)  # train.search's walk, as the train stage
        fitted, cfg = found.fitted, found.cfg
        again = refit(processed, cfg, bench.seed, fitted)
        bundle = ModelBundle.from_training(
            again.model, with_val_in_train(processed), {"model": family, "refit_train_rows": 1}
        )
        start = time.perf_counter()
        result = evaluate(bundle, processed, bench.evaluate).metrics
        seconds = time.perf_counter() - start
        out["families"][family] = {
            **{c: result["ranking"][c] for c in COLUMNS},
            "rmse": result["test"]["rmse"],
            # Every fit the stage runs: the search's trials (the first among them) and the refit.
            "fit_seconds": (sum(t.seconds for t in found.trials) or fitted.seconds) + again.seconds,
            "search_seconds": found.seconds,
            "chosen": found.chosen,
            "epochs": fitted.best_epoch,
            "evaluate_seconds": seconds,
        }
        if "baselines" not in out:  # the same for every family: learnt from the same rows
            base = result["baselines"]
            out["baselines"] = {
                "popularity": {c: base["popularity"][c] for c in COLUMNS},
                "ease": {c: base["ease"].get(c) for c in COLUMNS}
                | {"lambda": base["ease"].get("lambda")},
            }
        keras.backend.clear_session()
        got = out["families"][family]
        print(
            f"[ranking] {fold} {family}: NDCG@10 {got['ndcg@10']:.4f} P@10 "
            f"{got['precision@10']:.4f} RMSE {got['rmse']:.4f} ({got['fit_seconds']:.0f} s, "
            f"search {got['search_seconds']:.0f} s, {cfg.search.knob} {got['chosen']}); "
            f"EASE {out['baselines']['ease']['ndcg@10']:.4f}, popularity "
            f"{out['baselines']['popularity']['ndcg@10']:.4f}",
            file=sys.stderr,
        )
    return out


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report_markdown(result: dict[str, Any]) -> str:
    folds = result["folds"]
    names = list(next(iter(folds.values()))["families"])
    rows: list[tuple[str, dict[str, list[float]], str]] = []
    for base in ("popularity", "ease"):
        values = {c: [f["baselines"][base][c] for f in folds.values()] for c in COLUMNS}
        lams = sorted({str(f["baselines"]["ease"]["lambda"]) for f in folds.values()})
        note = f"lambda {', '.join(lams)} (chosen on val)" if base == "ease" else "train counts"
        rows.append((base.upper() if base == "ease" else base, values, note))
    for name in names:
        values = {
            c: [f["families"][name][c] for f in folds.values()]
            for c in (*COLUMNS, "rmse", "fit_seconds")
        }
        rows.append((f"ours: {name}", values, ""))
    n = len(folds)
    lines = [
        f"# Ranking benchmark: MovieLens-100K, {n} canonical fold(s) ({', '.join(folds)})",
        "",
        f"Generated by `make bench` (`benchmarks/ranking.py`) on {result['date']}. Mean "
        f"{'± standard deviation ' if n > 1 else ''}over the folds; each fold's test set "
        "chooses nothing (early stopping, EASE's lambda and every knob use the validation part "
        "carved from `uN.base`). Protocol of `reports/metrics.json`: relevant = test rating >= "
        f"{result['threshold']}, candidates = every item the user did not rate in training, "
        "K = 10. As the train stage does, `train.search` first picks its knob on the validation "
        "part, then our models are refit on train + val for the epoch count early stopping "
        "chose; training (s) counts every fit of that: the search's trials and the refit.",
        "",
        "| model | NDCG@10 | P@10 | R@10 | coverage@10 | test RMSE | training (s) | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, values, note in rows:
        rmse = _mean_sd(values["rmse"]) if "rmse" in values else "-"
        fit_s = f"{statistics.mean(values['fit_seconds']):.0f}" if "fit_seconds" in values else "-"
        cells = " | ".join(_mean_sd(values[c]) for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {rmse} | {fit_s} | {note} |")
    lines += ["", "Per fold (NDCG@10):", "", "| model | " + " | ".join(folds) + " |"]
    lines.append("|---|" + "---:|" * n)
    for base in ("popularity", "ease"):
        cells = " | ".join(f"{f['baselines'][base]['ndcg@10']:.4f}" for f in folds.values())
        lines.append(f"| {base} | {cells} |")
    for name in names:
        cells = " | ".join(f"{f['families'][name]['ndcg@10']:.4f}" for f in folds.values())
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "Differences under ~0.02 NDCG@10 are within the noise of one fold (compare the per-fold "
        "rows). Machine: "
        f"{result['machine']['cpus']} CPUs, load {result['machine']['load']} at the start; fit "
        "times are fit + refit, start-up excluded.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    default_data = os.environ.get("ML100K_DIR", str(HERE.parent.parent / "shared/data/ml-100k"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", default=default_data, help="ML-100K folder (%(default)s)")
    parser.add_argument("--params", default="params.yaml", help="knobs of our families")
    parser.add_argument("--out", required=True, help="Markdown report to write")
    parser.add_argument("--json", required=True, help="JSON results to write")
    parser.add_argument("--folds", default=",".join(FOLDS), help="comma-separated")
    parser.add_argument("--families", help="comma-separated (default: every family)")
    args = parser.parse_args(argv)

    from recommender.core.config import FAMILIES, load_params
    from recommender.core.io import write_json, write_text
    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    ml100k = Path(args.ml100k).resolve()
    folds = [f for f in args.folds.split(",") if f]
    for fold in folds:
        for part in ("base", "test"):
            if not (ml100k / f"{fold}.{part}").is_file():
                raise SystemExit(f"{ml100k / f'{fold}.{part}'}: missing; set ML100K_DIR")
    families = [f for f in (args.families or ",".join(FAMILIES)).split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; expected some of {FAMILIES}")
    params = load_params(args.params)
    load = [round(x, 2) for x in os.getloadavg()]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "data": f"{ml100k.name} ({', '.join(folds)})",  # no machine paths in a tracked file
        "threshold": params.evaluate.relevance_threshold,
        "folds": {fold: run_fold(params, ml100k, fold, families) for fold in folds},
        "machine": {"cpus": os.cpu_count(), "load": load},
    }
    write_json(result, args.json)
    text = report_markdown(result)
    write_text(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
