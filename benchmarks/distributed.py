"""Two workers against one process: training time and quality under ``train.distribute``.

    python benchmarks/distributed.py --size 1m --family biased_mf \\
        --out reports/bench_distributed.md --json reports/bench_distributed.json

(``make bench-distributed``.) The data is the synthetic set of ``benchmarks/scale.py``'s size
(``1m``: ML-1M's shape, 6,040 users x 3,706 items, 1,000,209 ratings), ingested and split as the
pipeline does. The family trains with its params.yaml knobs (epochs, patience, batch size) three
ways, one after the other, each through ``python -m recommender.training.distributed`` (fit with
early stopping on the validation part, no refit):

- ``none``: the training loop in one process under TensorFlow's default strategy (what
  ``train`` runs by default);
- ``mirrored``: the same loop under ``MirroredStrategy`` in one process (one replica on a CPU);
- ``multi_worker``: the same loop on two worker processes over loopback (``TF_CONFIG``).

Reported per engine: the process's wall time (start-up and data loading included), the fit's
seconds, seconds per epoch after the first, epochs run and the best one, validation and test
RMSE, and whether the two workers ended with identical weights. Two workers on one machine share
its cores: the figure shows that the engine works and what it costs, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from scale import SIZES  # noqa: E402
from support import child_env, free_ports  # noqa: E402

ENGINES = ("none", "mirrored", "multi_worker")
#: A process that runs longer than this is stopped (a dead peer leaves the other one waiting).
DEADLINE_S = 3600


def make_data(size: str, params: Any, folder: Path) -> Path:
    """The size's synthetic ratings, preprocessed as the pipeline does, in ``folder``."""
    from recommender.data.synthetic import generate
    from recommender.dataset.processed import write_processed
    from recommender.preprocess.split import preprocess

    shape = SIZES[size]
    synthetic = params.synthetic
    if shape.n_users is not None:
        synthetic = synthetic.model_copy(
            update={
                "n_users": shape.n_users,
                "n_items": shape.n_items,
                "n_ratings": shape.n_ratings,
            }
        )
    out = folder / "processed"
    write_processed(
        preprocess(generate(synthetic, params.seed), params.preprocess, params.seed), out
    )
    return out


def run_engine(engine: str, raw: dict[str, Any], data: Path, folder: Path) -> dict[str, Any]:
    """Train with ``engine``; return its reports (one per process) and wall seconds."""
    params_file = folder / f"{engine}.yaml"
    params_file.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "distribute": engine}}))
    out = folder / engine
    args = [sys.executable, "-m", "recommender.training.distributed", "--data", str(data)]
    args += ["--params", str(params_file), "--out", str(out)]
    n_workers = 2 if engine == "multi_worker" else 1
    ports = free_ports(n_workers)  # at once: two separate draws can return one port twice
    procs = []
    start = time.perf_counter()
    for index in range(n_workers):
        env = child_env()
        if engine == "multi_worker":
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
        log = open(folder / f"{engine}-{index}.log", "w")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=max(DEADLINE_S - (time.perf_counter() - start), 1))
        finally:
            for other, _ in procs:
                if other.poll() is None and proc.returncode != 0:
                    other.kill()
            log.close()
    wall = time.perf_counter() - start
    failed = [i for i, (proc, _) in enumerate(procs) if proc.returncode != 0]
    if failed:
        tail = (folder / f"{engine}-{failed[0]}.log").read_text().splitlines()[-20:]
        raise SystemExit(f"{engine} worker {failed[0]} failed:\n" + "\n".join(tail))
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    identical = None
    if n_workers > 1:
        arrays = [np.load(p) for p in sorted(out.glob("*.npz"))]
        identical = all(
            np.array_equal(arrays[0][k], other[k]) for other in arrays[1:] for k in arrays[0].files
        )
    return {"engine": engine, "wall_seconds": wall, "reports": reports, "identical": identical}


def row(result: dict[str, Any]) -> dict[str, Any]:
    """One table row from the chief's (or the only) report."""
    chief = next(r for r in result["reports"] if r["chief"])
    later = chief["history"]["epoch_seconds"][1:]
    return {
        "engine": result["engine"],
        "processes": len(result["reports"]),
        "replicas": chief["num_replicas_in_sync"],
        "wall_s": round(result["wall_seconds"], 1),
        "fit_s": round(chief["seconds"], 1),
        "epoch_s": round(float(np.mean(later)), 2) if later else None,
        "epochs": chief["epochs_run"],
        "best_epoch": chief["best_epoch"],
        "val_rmse": round(chief["val_rmse"], 4),
        "test_rmse": round(chief["test_rmse"], 4),
        "identical_weights": result["identical"],
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = list(rows[0])
    lines = [
        f"# Two workers vs one process: {meta['family']} on the {meta['size']} synthetic set",
        "",
        f"{meta['train_rows']:,} train rows, batch {meta['batch_size']}, at most "
        f"{meta['max_epochs']} epochs with early stopping on the validation part (patience "
        f"{meta['patience']}), no refit. Machine: {meta['cores']} cores, load average "
        f"{meta['load_before']} before and {meta['load_after']} after (a shared machine).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    lines += [
        "",
        "`wall_s`: each process from start to exit (TensorFlow's start-up and data loading "
        "included; two workers run at once). `fit_s`: the fit loop; `epoch_s`: mean seconds of "
        "the epochs after the first (which traces the graph). Both workers share this machine's "
        "cores, so two workers are not faster here: the table shows the engine works (same "
        "quality, identical weights on both workers) and what its collectives cost.",
        "",
        f"Reproduce: `{meta['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1m", choices=sorted(SIZES))
    parser.add_argument("--family", default="biased_mf")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--epochs", type=int, help="cap (for checking the harness, not a report)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", default="reports/bench_distributed.md")
    parser.add_argument("--json", default="reports/bench_distributed.json")
    args = parser.parse_args(argv)

    from recommender.core.config import load_params, parse_params
    from recommender.core.telemetry import disable_telemetry

    disable_telemetry()
    raw = yaml.safe_load(Path(args.params).read_text())
    raw["train"] = {**raw.get("train", {}), "model": args.family}
    if args.epochs:
        raw["train"][args.family] = {**raw["train"].get(args.family, {}), "epochs": args.epochs}
    params = parse_params(raw, args.params)
    load_params(args.params)  # the file itself is valid too
    cfg = params.train
    load_before = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        folder = Path(tmp)
        data = make_data(args.size, params, folder)
        from recommender.dataset.processed import load_processed

        train_rows = len(load_processed(data).train)
        results = []
        for engine in args.engines.split(","):
            print(f"{engine} ...", flush=True)
            results.append(run_engine(engine, raw, data, folder))
            print(json.dumps(row(results[-1])), flush=True)
    meta = {
        "family": args.family,
        "size": args.size,
        "train_rows": train_rows,
        "batch_size": cfg.family_batch_size,
        "max_epochs": cfg.family_epochs,
        "patience": cfg.family_patience,
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 1),
        "command": "python benchmarks/distributed.py " + " ".join(argv or sys.argv[1:]),
    }
    rows = [row(r) for r in results]
    Path(args.out).write_text(markdown(rows, meta))
    full = {"meta": meta, "rows": rows, "histories": {r["engine"]: r["reports"] for r in results}}
    Path(args.json).write_text(json.dumps(full, indent=2) + "\n")
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
