"""Exact vs ANN top-K at catalog sizes the service may meet: recall@10 and per-query latency.

    python benchmarks/ann.py [--sizes 100k,1m] [--out reports/bench_ann.md]

For each size, seeded synthetic factors (items and users drawn around 64 shared centres, 64 dims,
item biases, 20 rated items per user) are indexed by the library's own
:func:`recommender.scoring.ann.build_index` (what the package stage runs, ``nprobe`` chosen for
``--min-recall``). Then, one query at a time on one thread (``OMP``/BLAS limited to 1), the p50
and p99 of ``recommend`` (top-10, rated items excluded) exactly (every item scored, as the service
does up to ``serve.exact_max_items``) and through the index, their recall@10 against exact over
``--recall-users`` users, and the same for ``similar_items``. Writes a Markdown table (and JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SIZES = {"100k": 100_000, "1m": 1_000_000}
DIM, CENTRES, N_USERS, RATED = 64, 64, 2_000, 20


def synthetic_factors(n_items: int, seed: int = 0) -> tuple[object, object]:
    """Clustered factors with biases, and each user's rated items (as training would give)."""
    from recommender.scoring.factors import Factors
    from recommender.scoring.ranking import SeenItems

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CENTRES, DIM)).astype(np.float32)

    def around(n: int) -> np.ndarray:
        points = centres[rng.integers(0, CENTRES, n)] + 0.5 * rng.normal(size=(n, DIM))
        return (0.3 * points).astype(np.float32)

    factors = Factors(
        user_vectors=around(N_USERS + 1),
        item_vectors=around(n_items + 1),
        user_bias=rng.normal(0, 0.1, N_USERS + 1).astype(np.float32),
        item_bias=rng.normal(0, 0.5, n_items + 1).astype(np.float32),
        global_mean=3.5,
    )
    users = np.repeat(np.arange(1, N_USERS + 1), RATED)
    seen = SeenItems(users, rng.integers(1, n_items + 1, users.size), N_USERS)
    return factors, seen


def latencies_ms(fn, queries: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(int(q))
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def measure(size: str, args: argparse.Namespace) -> dict:
    import faiss
    from threadpoolctl import threadpool_limits

    from recommender.scoring.ann import build_index, exact_similar_items, recall_at_k
    from recommender.scoring.ranking import rank, similar_items

    n = SIZES[size]
    factors, seen = synthetic_factors(n)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # the build may use every core
    start = time.perf_counter()
    index, record = build_index(factors, min_recall=args.min_recall, seen=seen)  # type: ignore[arg-type]
    build = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    limits = threadpool_limits(limits=1)
    print(f"{size}: built in {build:.1f} s: {record}", flush=True)

    def exact(users: np.ndarray):  # type: ignore[no-untyped-def]
        return rank(
            lambda b: factors.score(b).astype(np.float32),  # type: ignore[attr-defined]
            users,
            10,
            n + 1,
            seen=seen,  # type: ignore[arg-type]
        )

    rng = np.random.default_rng(1)
    users = rng.choice(np.arange(1, N_USERS + 1), size=args.recall_users, replace=False)
    recall = recall_at_k(index.recommend(users, 10, seen=seen).items, exact(users).items)
    items = rng.choice(np.arange(1, n + 1), size=args.similar_items, replace=False)
    vectors = factors.item_vectors  # type: ignore[attr-defined]
    similar_recall = recall_at_k(
        np.stack([index.similar(int(i), 10).items for i in items]),
        exact_similar_items(vectors, items, 10),
    )
    queries = users[: args.queries]
    timings = {
        "exact": latencies_ms(lambda u: exact(np.array([u])), queries),
        "ann": latencies_ms(lambda u: index.recommend(np.array([u]), 10, seen=seen), queries),
        # similar_items casts the whole table to float64 per call (~2 s at 1M): fewer items.
        "similar_exact": latencies_ms(lambda i: similar_items(vectors, i, 10), items[:20]),
        "similar_ann": latencies_ms(lambda i: index.similar(i, 10), items),
    }
    row = {
        "size": size,
        "n_items": n,
        "nlist": record["nlist"],
        "nprobe": record["nprobe"],
        "cosine_nprobe": record["cosine_nprobe"],
        "build_s": round(build, 1),
        "recall_at_10": round(recall, 4),
        "similar_recall_at_10": round(similar_recall, 4),
    }
    for name, ms in timings.items():
        row[f"{name}_p50_ms"] = round(float(np.percentile(ms, 50)), 3)
        row[f"{name}_p99_ms"] = round(float(np.percentile(ms, 99)), 3)
    limits.restore_original_limits()
    # A shared machine's load moves every latency here: each row says what it ran beside.
    row["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps(row), flush=True)
    return row


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Exact vs ANN top-K (`make bench-ann`)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs "
        f"({platform.processor() or 'x86_64'}); the build on every core, then one query at a "
        f"time on one thread. Synthetic clustered factors ({DIM} dims, {CENTRES} centres, item "
        f"biases), {N_USERS} users with {RATED} rated items each. Index: the package stage's "
        "`build_index` (FAISS IndexIVFFlat, "
        f"inner product over [q_i, b_i]; nprobe the fewest lists reaching recall@10 "
        f">= {args.min_recall} on 300 users). recommend: top-10, rated items excluded, "
        f"recall over {args.recall_users} users, latency over {args.queries}; similar_items: "
        f"recall and ANN latency over {args.similar_items} items, exact latency over 20.",
        "",
        "| items | nlist | nprobe | build s | recall@10 | exact p50 ms | ANN p50 ms | speed-up "
        "| exact p99 ms | ANN p99 ms | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_items']:,} | {r['nlist']} | {r['nprobe']} | {r['build_s']} "
            f"| {r['recall_at_10']:.4f} | {r['exact_p50_ms']:.2f} | {r['ann_p50_ms']:.2f} "
            f"| {r['exact_p50_ms'] / r['ann_p50_ms']:.0f}x | {r['exact_p99_ms']:.2f} "
            f"| {r['ann_p99_ms']:.2f} | {r.get('load_average', '')} |"
        )
    lines += [
        "",
        "similar_items (cosine):",
        "",
        "| items | nprobe | recall@10 | exact p50 ms | ANN p50 ms | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_items']:,} | {r['cosine_nprobe']} | {r['similar_recall_at_10']:.4f} "
            f"| {r['similar_exact_p50_ms']:.2f} | {r['similar_ann_p50_ms']:.2f} "
            f"| {r['similar_exact_p50_ms'] / r['similar_ann_p50_ms']:.0f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100k,1m", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--min-recall", type=float, default=0.99)
    parser.add_argument("--recall-users", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200, help="single queries timed")
    parser.add_argument("--similar-items", type=int, default=100)
    parser.add_argument("--out", default="reports/bench_ann.md")
    parser.add_argument("--json", default="reports/bench_ann.json")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; expected some of {list(SIZES)}")

    rows = [measure(size, args) for size in sizes]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(rows, args))
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
