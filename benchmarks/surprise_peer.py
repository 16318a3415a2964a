"""scikit-surprise's BaselineOnly, SVD and SVD++ on one train/test split: the peers we compare to.

Runs inside its own environment (Surprise needs numpy<2, ours numpy 2; ``make bench`` builds
``.venv-surprise``), started as a subprocess by ``benchmarks/run.py`` so both sides are timed in
the same run on the same machine::

    .venv-surprise/bin/python benchmarks/surprise_peer.py --train u1.base --test u1.test

Prints one JSON object on stdout: ``{"surprise": version, "models": {name: {"rmse", "mae",
"fit_seconds", "params"}}}``. Standard library and Surprise only: it must not import our package.
``--svd 64,20 --only "SVD 64x20"`` runs one SVD of that size instead (``benchmarks/scale.py``
compares throughput at matched factors).

The SVD and SVD++ settings are the best on our validation split (the same 10% carved from
``u1.base`` that our models early-stop on; ``u1.test`` never took part): SVD from a grid over
factors {50, 100, 200} x epochs {20, 40, 80} x learning rate {0.005, 0.01} x regularization
{0.02, 0.05, 0.1} (and 0.15, 0.2 at 100 factors), val RMSE 0.9095; SVD++ from factors {20, 50}
x regularization {0.02, 0.05, 0.1} at its default 20 epochs and learning rate 0.007 (each fit
takes minutes), val RMSE 0.9131. Surprise then trains on all of ``u1.base``, as its users
would.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

#: name -> (Surprise class, constructor arguments). ``SVD (defaults)`` shows what tuning bought.
PEERS: dict[str, tuple[str, dict]] = {
    "BaselineOnly": ("BaselineOnly", {}),
    "SVD (defaults)": ("SVD", {}),
    "SVD": ("SVD", {"n_factors": 100, "n_epochs": 80, "lr_all": 0.005, "reg_all": 0.1}),
    "SVD++": ("SVDpp", {"n_factors": 20, "n_epochs": 20, "lr_all": 0.007, "reg_all": 0.05}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="tab-separated user, item, rating[, time]")
    parser.add_argument("--test", required=True, help="same format")
    parser.add_argument("--seed", type=int, default=0, help="random_state of SVD and SVD++")
    parser.add_argument("--only", nargs="*", help="run only these peers (names as in PEERS)")
    parser.add_argument(
        "--svd",
        metavar="FACTORS,EPOCHS",
        help="add an SVD with these factors and epochs (Surprise's defaults otherwise), named "
        "'SVD <factors>x<epochs>' (benchmarks/scale.py's like-for-like peer)",
    )
    args = parser.parse_args(argv)
    peers = dict(PEERS)
    if args.svd:
        factors, epochs = (int(x) for x in args.svd.split(","))
        peers[f"SVD {factors}x{epochs}"] = ("SVD", {"n_factors": factors, "n_epochs": epochs})

    import surprise
    from surprise import Dataset, Reader, accuracy
    from surprise.model_selection import PredefinedKFold

    reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
    data = Dataset.load_from_folds([(args.train, args.test)], reader=reader)
    trainset, testset = next(PredefinedKFold().split(data))

    results = {}
    for name, (cls_name, kwargs) in peers.items():
        if args.only and name not in args.only:
            continue
        params = dict(kwargs)
        if cls_name != "BaselineOnly":
            params["random_state"] = args.seed
        algo = getattr(surprise, cls_name)(**params, verbose=False)
        start = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - start
        predictions = algo.test(testset)
        results[name] = {
            "class": cls_name,
            "params": kwargs,
            "rmse": accuracy.rmse(predictions, verbose=False),
            "mae": accuracy.mae(predictions, verbose=False),
            "fit_seconds": seconds,
            "rows": len(predictions),
        }
        print(f"{name}: RMSE {results[name]['rmse']:.4f} in {seconds:.2f} s", file=sys.stderr)
    json.dump({"surprise": surprise.__version__, "models": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
