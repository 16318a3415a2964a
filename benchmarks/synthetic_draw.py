"""The ingest stage's generator at the real sets' shapes: the keyed draw against the rejection draw.

``recommender.data.synthetic`` picks each user's items by a Gumbel key on every user x item cell
up to ``_DENSE_CELLS`` (100M) cells, and by rejection from the popularity law above (work grows
with the ratings). This times both on the same shapes, side by side in one run, each
``generate`` + ``write_dataset`` in a fresh process (its peak RSS is its own)::

    python benchmarks/synthetic_draw.py --out reports/bench_synthetic.md

ML-25M's shape is drawn by rejection only unless ``--keyed-25m`` (the keyed draw keys 9.6G
cells there: several minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from scale import SIZES  # noqa: E402

#: (label, users, items, ratings): the MovieLens sets' shapes that ``make bench-scale`` runs.
SHAPES = [
    (s.label, s.n_users, s.n_items, s.n_ratings) for s in (SIZES[n] for n in ("1m", "10m", "25m"))
]


def measure(users: int, items: int, ratings: int, draw: str) -> dict[str, float | str]:
    """In this process: generate (forcing ``draw``), write the tables, report."""
    from recommender.core.config import SyntheticConfig
    from recommender.core.schema import write_dataset
    from recommender.data import synthetic

    synthetic._DENSE_CELLS = 10**18 if draw == "keyed" else 0
    start = time.perf_counter()
    data = synthetic.generate(SyntheticConfig(n_users=users, n_items=items, n_ratings=ratings), 42)
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        write_dataset(data, folder)
    return {
        "draw": draw,
        "generate_s": generated,
        "total_s": time.perf_counter() - start,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "mean_rating": float(data.ratings["rating"].mean()),
    }


def run_child(users: int, items: int, ratings: int, draw: str) -> dict[str, float | str]:
    args = [sys.executable, __file__, "--child", f"{users},{items},{ratings},{draw}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/bench_synthetic.md")
    parser.add_argument("--keyed-25m", action="store_true", help="also key ML-25M's 9.6G cells")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        users, items, ratings, draw = args.child.split(",")
        print(json.dumps(measure(int(users), int(items), int(ratings), draw)))
        return 0

    rows = []
    for label, users, items, ratings in SHAPES:
        draws = ["keyed", "rejection"]
        if label == "ML-25M-like" and not args.keyed_25m:
            draws = ["rejection"]
        for draw in draws:
            result = run_child(users, items, ratings, draw)
            print(label, json.dumps(result), flush=True)
            rows.append((label, users, items, ratings, result))

    from recommender.data.synthetic import _DENSE_CELLS  # the threshold the ingest stage uses

    used = {label: "keyed" if u * i <= _DENSE_CELLS else "rejection" for label, u, i, _ in SHAPES}
    lines = [
        "# The synthetic generator: keyed vs rejection draw",
        "",
        f"Reproduce: `python benchmarks/synthetic_draw.py --out {args.out}"
        f"{' --keyed-25m' if args.keyed_25m else ''}`. Generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs ({platform.machine()}), "
        f"load average {os.getloadavg()[0]:.1f} at the end. Each row: `generate` (seed 42) and "
        "`write_dataset` in a fresh process; *used* marks the draw the ingest stage takes at that "
        f"shape (keyed up to {_DENSE_CELLS:,} user x item cells).",
        "",
        "| shape | users | items | ratings | draw | generate s | with write s | peak RSS GB "
        "| mean rating | used |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|:---:|",
    ]
    for label, users, items, ratings, r in rows:
        lines.append(
            f"| {label} | {users:,} | {items:,} | {ratings:,} | {r['draw']} | "
            f"{r['generate_s']:.1f} | {r['total_s']:.1f} | {r['peak_rss_gb']:.2f} | "
            f"{r['mean_rating']:.3f} | {'yes' if used[label] == r['draw'] else ''} |"
        )
    used_s = {label: r["total_s"] for label, *_, r in rows if used[label] == r["draw"]}
    if {"ML-1M-like", "ML-10M-like"} <= used_s.keys():
        growth = float(used_s["ML-10M-like"]) / float(used_s["ML-1M-like"])
        lines += ["", f"Growth 10M / 1M of the draws used (with write): **{growth:.1f}x**."]
    lines += [
        "",
        "Both draws sample each user's items from the same law (successive sampling without "
        "replacement, popularity x exp(taste)); their random streams differ, so a shape's tables "
        "differ between draws, and the mean rating with them (the biases are drawn after).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
