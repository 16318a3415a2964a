"""The register stage: version the trained model and move ``champion`` only through a tested gate.

The candidate is the model the train stage logged (``models/run.json``). It always becomes a version
of the registered model (once per training run: a rerun reuses the version). Whether it also
becomes the ``champion`` is decided on the candidate's own test split:

* the *primary* metric is NDCG@k for families trained to rank and RMSE for the others
  (``register.primary``); the other metric is the *guard*;
* with no champion yet, it must beat the baseline on the primary metric (popularity's NDCG or the
  bias baseline's RMSE, from ``metrics.json``);
* otherwise the champion is loaded from the registry and re-scored on the same test rows and
  users (its own vocabulary maps the raw ids), and a paired bootstrap over users gives confidence
  intervals for the change of both metrics. The candidate wins only if the whole primary
  interval lies beyond ``register.min_delta`` on the better side, the guard interval does not
  lie entirely beyond ``register.guard_delta`` on the worse side, *and* it beats the baseline
  (:func:`recommender.registry.gate.decide`).

A loser keeps its version and gets the ``challenger`` alias; the champion is untouched. A rerun
for a candidate that already is the champion replays its recorded promotion (same report, same
bytes); a champion set by hand is ``kept``.

Crash safety: every write that describes the candidate (the version, its tags, the training run's
metrics) happens first, and the alias move is the single last write to the registry. The version
is READY and its bundle has been downloaded and loaded before that, so ``@champion`` always points
at a complete model that loads. Killed at any point, the stage can simply be run again. A stage
that fails (rather than being killed) once the version exists tags it ``gate.decision=failed``
with the reason, so no version is left looking judged when it was not. The gate runs under
:func:`gate_lock` (one stage at a time; a dead holder's lock is taken over by one stage only).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from recommender import tracking
from recommender.core import failpoints
from recommender.core.config import Params
from recommender.core.io import write_json
from recommender.registry.gate import Comparison, decide, paired_bootstrap, round6
from recommender.registry.lineage import lineage
from recommender.scoring.bundle import CONTENT_TAG, recorded_digest
from recommender.tracking.gate_lock import gate_lock
from recommender.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_version,
    asking,
    check_reachable,
    load_version_bundle,
    version_for,
    wait_ready,
)

log = logging.getLogger("recommender")

#: Model version tag holding the gate's full record as JSON.
RECORD_TAG = "gate.record"


def _rmse(sq: np.ndarray) -> float:
    return round6(np.sqrt(np.mean(sq)))


def register_and_gate(
    params: Params,
    model_dir: str | Path,
    data_dir: str | Path,
    metrics_path: str | Path,
    out_path: str | Path,
    lock_path: str | Path | None = "dvc.lock",
    project_dir: str | Path = ".",
) -> dict[str, Any]:
    """Register the train stage's model, run the champion gate, write ``out_path``.

    Args:
        params: The validated params (``register``, ``tracking`` and ``seed`` are read).
        model_dir: The train stage's folder (``run.json`` names the MLflow run and model).
        data_dir: The preprocess stage's folder (``test.parquet`` is scored).
        metrics_path: The evaluate stage's ``metrics.json`` (bias baseline, test RMSE).
        out_path: ``promotion.json`` to write (a DVC metric; same inputs, same bytes).
        lock_path: ``dvc.lock`` whose digest goes into the lineage (skipped when missing).
        project_dir: Where the default SQLite store lives and whose git commit is recorded.

    Returns:
        The content written to ``out_path``.

    Raises:
        RegistryError: The registry cannot be reached or refuses the model.
    """
    import mlflow

    name = params.tracking.registered_model
    run = tracking.read_run(model_dir)
    uri = tracking.configure(project_dir)
    client = mlflow.MlflowClient()
    check_reachable(client, uri, run["run_id"])  # tracking.connect's probe, plus the run

    metrics = json.loads(Path(metrics_path).read_text())
    digest = recorded_digest(Path(model_dir) / tracking.BUNDLE_DIR)
    reads = (model_dir, data_dir, metrics_path)  # the lock digest covers the stages behind them
    facts = {**lineage(params, run, data_dir, lock_path, project_dir, reads), CONTENT_TAG: digest}
    # The calls below name what they ask for when the server refuses; this names the rest.
    with asking(f"use registered model {name!r}", "EDIT on it"), gate_lock(client, name) as lease:
        record = _gate(
            params, client, run, facts, digest, metrics, metrics_path, data_dir, lease.check
        )
    write_json(record, out_path)
    return record


def _gate(
    params: Params,
    client: Any,
    run: dict[str, Any],
    facts: dict[str, str],
    digest: str,
    metrics: dict[str, Any],
    metrics_path: str | Path,
    data_dir: str | Path,
    before_alias: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Version the candidate, judge it against the champion, move an alias (under the lock).

    ``before_alias`` runs right before the alias moves (:meth:`GateLease.check`). A failure once
    the version exists leaves it marked ``gate.decision=failed`` (:func:`_mark_failed`).
    """
    name = params.tracking.registered_model
    version = version_for(client, name, run, facts, digest)
    try:
        candidate = wait_ready(client, name, version)
        return _judge(
            params, client, run, facts, metrics, metrics_path, data_dir, candidate, before_alias
        )
    except BaseException as exc:
        _mark_failed(client, name, version, run["run_id"], exc)
        raise


def _mark_failed(client: Any, name: str, version: str, run_id: str, exc: BaseException) -> None:
    """Say on the version (and its training run) that its gate did not finish.

    ``gate.decision=failed`` and ``gate.reason`` (the error's first line), unless the version
    is the champion (the alias moved before the failure, or a rerun of a champion failed: its
    recorded promotion stands). A recorded promotion that never took effect is removed, so no
    tag says ``promoted`` of a version the alias never reached. A version that had lost an earlier
    gate keeps its ``challenger`` alias and its record. Best effort: if the registry is what
    failed, this may fail too (a warning), and a rerun resumes with the same version.
    """
    reason = f"register failed before the gate finished: {tracking.first_line(exc)}"
    try:
        with tracking.no_retries():
            champion = alias_version(client, name, CHAMPION)
            if champion is not None and str(champion.version) == version:
                return
            mv = client.get_model_version(name, version)
            client.set_model_version_tag(name, version, "gate.decision", "failed")
            client.set_model_version_tag(name, version, "gate.reason", reason)
            recorded = json.loads((mv.tags or {}).get(RECORD_TAG) or "{}")
            if recorded.get("decision") == "promoted":
                client.delete_model_version_tag(name, version, RECORD_TAG)
            client.set_tag(run_id, "gate.decision", "failed")
            client.set_tag(run_id, "gate.reason", reason)
        log.info("%s version %s is marked gate.decision=failed", name, version)
    except Exception as tag_exc:  # noqa: BLE001 (the original error is what the stage reports)
        log.warning(
            "could not mark version %s of %s as failed: %s",
            version, name, tracking.first_line(tag_exc),
        )  # fmt: skip


def _judge(
    params: Params,
    client: Any,
    run: dict[str, Any],
    facts: dict[str, str],
    metrics: dict[str, Any],
    metrics_path: str | Path,
    data_dir: str | Path,
    candidate: Any,
    before_alias: Callable[[], None],
) -> dict[str, Any]:
    """Judge the READY ``candidate`` against the champion; tag it; move an alias."""
    name = params.tracking.registered_model
    version = str(candidate.version)
    champion = alias_version(client, name, CHAMPION)
    test = _TestSplit.read(data_dir)

    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        # The registered copy is the one scored, so the gate judges exactly what @champion serves.
        bundle = load_version_bundle(name, version, Path(tmp) / "candidate")
        sq_c = _squared_errors(bundle, test)
        candidate_rmse = _rmse(sq_c)
        expected = float(metrics["test"]["rmse"])
        if abs(candidate_rmse - expected) > 1e-4:
            raise RegistryError(
                f"version {name}/{version} scores test RMSE {candidate_rmse:.6f} on "
                f"{test.path}, but {metrics_path} says {expected:.6f}: "
                f"the metrics are not from this model (rerun the evaluate stage)"
            )
        if champion is not None and str(champion.version) == version:
            gate = _recorded_gate(candidate)
        else:
            gate = _new_gate(params, metrics, test, bundle, sq_c, version, champion, Path(tmp))

    record = {**gate, "registered_model": name, "lineage": facts}
    _describe(client, name, version, run["run_id"], gate, facts)
    failpoints.hit("register.before_alias")
    before_alias()
    _move_alias(client, name, version, gate["decision"])
    failpoints.hit("register.after_alias")
    return record


@dataclass(frozen=True)
class _TestSplit:
    """The test split's pairs and ratings, as the gate scores them."""

    path: Path
    users: np.ndarray
    items: np.ndarray
    y: np.ndarray

    @classmethod
    def read(cls, data_dir: str | Path) -> _TestSplit:
        import pandas as pd

        path = Path(data_dir) / "test.parquet"
        test = pd.read_parquet(path)
        users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
        return cls(path, users, items, test["rating"].to_numpy(dtype=np.float64))

    def where(self, keep: np.ndarray) -> _TestSplit:
        return _TestSplit(self.path, self.users[keep], self.items[keep], self.y[keep])


def _unseen_by(model: Any, test: _TestSplit) -> np.ndarray:
    """Which test rows ``model`` did not train on (a mask over ``test``'s rows).

    A retrain on grown data draws a new split, so some of the candidate's test rows may be rows the
    champion trained on. The champion masks its own train items out of its rankings, so on those
    rows it could never score a hit, and its errors there are in-sample: the two models are
    compared only on the rows neither of them saw.
    """
    users, items = model.user_index(test.users), model.item_index(test.items)
    return ~model.seen.contains(users, items) | (users == 0) | (items == 0)


def _squared_errors(bundle: Any, test: _TestSplit) -> np.ndarray:
    """Each test rating's squared error, from the model's raw (unclipped) predictions."""
    return (bundle.predict_raw(test.users, test.items).astype(np.float64) - test.y) ** 2


def _new_gate(
    params: Params,
    metrics: dict[str, Any],
    test: _TestSplit,
    bundle: Any,
    sq_c: np.ndarray,
    version: str,
    champion: Any,
    tmp: Path,
) -> dict[str, Any]:
    """The gate's decision for a version not judged before: RMSE and NDCG against the
    baselines and, when there is a champion, against it with paired bootstrap intervals."""
    from recommender.scoring.metrics import ndcg_by_user

    cfg = params.register_
    bias_rmse = float(metrics["baselines"]["bias"]["rmse"])
    k, threshold = params.evaluate.k, params.evaluate.relevance_threshold
    ndcg_name = f"ndcg@{k}"
    ranked_users, ndcg_c = ndcg_by_user(
        bundle, bundle, test.users, test.items, test.y, k, threshold
    )
    rmse = Comparison("rmse", False, _rmse(sq_c), bias_rmse, "bias baseline")
    ndcg = Comparison(
        ndcg_name,
        True,
        round6(np.mean(ndcg_c)) if ndcg_c.size else 0.0,
        float(metrics["baselines"]["popularity"][ndcg_name] or 0.0),
        "popularity ranking",
    )
    head_to_head: dict[str, Any] = {}
    if champion is not None:
        held = _load_champion(
            params.tracking.registered_model, str(champion.version), tmp / "champion"
        )
        rmse, ndcg, head_to_head = _against_champion(params, test, bundle, sq_c, held, rmse, ndcg)
    ranking = cfg.primary == "ndcg" or (cfg.primary == "auto" and bundle.retrieval is not None)
    primary, guard = (ndcg, rmse) if ranking else (rmse, ndcg)
    verdict = decide(primary, guard, cfg.min_delta, cfg.guard_delta)
    return {
        "decision": "promoted" if verdict.promote else "rejected",
        "reason": verdict.reason,
        "primary": primary.name,
        "guard": guard.name,
        "candidate_version": int(version),
        "champion_version": int(champion.version) if champion is not None else None,
        "candidate_rmse": rmse.candidate,
        "champion_rmse": head_to_head.get("champion_rmse"),
        "bias_rmse": round6(bias_rmse),
        "candidate_ndcg": ndcg.candidate,
        "champion_ndcg": head_to_head.get("champion_ndcg"),
        "popularity_ndcg": round6(ndcg.baseline),
        "ranked_users": int(ndcg_c.size),
        "interval": asdict(primary.interval) if primary.interval else None,
        "guard_interval": asdict(guard.interval) if guard.interval else None,
        "min_delta": cfg.min_delta,
        "guard_delta": cfg.guard_delta,
        "confidence": cfg.confidence,
        "resamples": cfg.bootstrap_resamples,
        "test_rows": int(test.y.size),
        # Of them, the rows the champion did not train on, where the intervals compare the two.
        "compared_rows": head_to_head.get("rows"),
        "candidate_rmse_compared": head_to_head.get("candidate_rmse"),
        "candidate_ndcg_compared": head_to_head.get("candidate_ndcg"),
    }


def _against_champion(
    params: Params,
    test: _TestSplit,
    bundle: Any,
    sq_c: np.ndarray,
    held: Any,
    rmse: Comparison,
    ndcg: Comparison,
) -> tuple[Comparison, Comparison, dict[str, Any]]:
    """The paired bootstrap intervals of the candidate's change against the champion ``held``,
    on the test rows the champion did not train on (:func:`_unseen_by`), and both models'
    figures there."""
    from recommender.scoring.metrics import ndcg_by_user

    cfg = params.register_
    k, threshold = params.evaluate.k, params.evaluate.relevance_threshold
    unseen = _unseen_by(held, test)
    if not unseen.any():
        raise RegistryError(
            f"the champion trained on every one of the {unseen.size} test rows in {test.path}: "
            "the candidate cannot be compared with it on data neither saw (give the split new "
            "rows, e.g. a temporal split after new ratings came in)"
        )
    both = test.where(unseen)
    sq_c, sq_h = sq_c[unseen], _squared_errors(held, both)
    users, ndcg_c = ndcg_by_user(bundle, bundle, both.users, both.items, both.y, k, threshold)
    _, ndcg_h = ndcg_by_user(held, bundle, both.users, both.items, both.y, k, threshold)
    n, conf, seed = cfg.bootstrap_resamples, cfg.confidence, params.seed
    rmse = replace(rmse, interval=paired_bootstrap(sq_c, sq_h, both.users, n, conf, seed))
    if ndcg_c.size:
        change = paired_bootstrap(ndcg_c, ndcg_h, users, n, conf, seed, statistic="mean")
        ndcg = replace(ndcg, interval=change)
    figures = {
        "rows": int(unseen.sum()),
        "candidate_rmse": _rmse(sq_c),
        "champion_rmse": _rmse(sq_h),
        "candidate_ndcg": round6(np.mean(ndcg_c)) if ndcg_c.size else 0.0,
        "champion_ndcg": round6(np.mean(ndcg_h)) if ndcg_h.size else 0.0,
    }
    return rmse, ndcg, figures


def _load_champion(name: str, version: str, dst: Path) -> Any:
    try:
        return load_version_bundle(name, version, dst)
    except RegistryError as exc:
        raise RegistryError(
            f"the current champion cannot be judged against: {exc}. Nothing was promoted. To "
            f'let new models compete again, move or remove the alias, e.g. python -c "import '
            f"mlflow; mlflow.MlflowClient().delete_registered_model_alias('{name}', "
            f"'{CHAMPION}')\" (with the same MLFLOW_TRACKING_URI), then rerun register"
        ) from None


def _recorded_gate(mv: Any) -> dict[str, Any]:
    """The gate record of a version that is already champion (a rerun after its promotion).

    Replaying the recorded promotion keeps ``promotion.json`` byte-stable across reruns. A
    champion whose record is missing or says otherwise was made champion by hand: it stays.
    """
    recorded = json.loads(mv.tags.get(RECORD_TAG) or "{}")
    if recorded.get("decision") == "promoted":
        return recorded
    return {
        "decision": "kept",
        "reason": "already the champion (the alias was set outside this stage)",
        "candidate_version": int(mv.version),
        "champion_version": int(mv.version),
    }


def _describe(
    client: Any,
    name: str,
    version: str,
    run_id: str,
    gate: dict[str, Any],
    facts: dict[str, str],
) -> None:
    """Tag the version and log the gate to the training run: all before any alias moves."""
    from mlflow.entities import Metric, RunTag

    tags = {
        **facts,
        "gate.decision": gate["decision"],
        "gate.reason": gate["reason"],
        RECORD_TAG: json.dumps(gate, sort_keys=True),
    }
    if gate.get("champion_version") is not None:
        tags["gate.champion_version"] = str(gate["champion_version"])
    interval, guard = gate.get("interval"), gate.get("guard_interval")
    if gate.get("primary"):
        tags["gate.primary"] = str(gate["primary"])
    if interval:
        tags["gate.delta_interval"] = f"[{interval['low']}, {interval['high']}]"
    if guard:
        tags["gate.guard_interval"] = f"[{guard['low']}, {guard['high']}]"
    with asking(f"tag version {version} of registered model {name!r}", "EDIT on it"):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)

    now = int(time.time() * 1000)
    values = {
        "gate_promoted": 1.0 if gate["decision"] == "promoted" else 0.0,
        "gate_candidate_rmse": gate.get("candidate_rmse"),
        "gate_champion_rmse": gate.get("champion_rmse"),
        "gate_delta": interval["delta"] if interval else None,
        "gate_delta_low": interval["low"] if interval else None,
        "gate_delta_high": interval["high"] if interval else None,
        "gate_candidate_ndcg": gate.get("candidate_ndcg"),
        "gate_champion_ndcg": gate.get("champion_ndcg"),
        "gate_guard_low": guard["low"] if guard else None,
        "gate_guard_high": guard["high"] if guard else None,
    }
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
    run_tags = [
        RunTag("registry.model", name),
        RunTag("registry.version", version),
        RunTag("gate.decision", gate["decision"]),
        RunTag("gate.reason", gate["reason"][:5000]),
    ]
    with asking(f"log the gate's result to the training run {run_id}", "EDIT on its experiment"):
        client.log_batch(run_id, metrics=metrics, tags=run_tags)
        client.log_dict(run_id, {**gate, "lineage": facts}, "promotion.json")


def _move_alias(client: Any, name: str, version: str, decision: str) -> None:
    """The single last registry write: ``champion`` to a winner, ``challenger`` to a loser.

    A version that is champion (``promoted`` or ``kept``) is never also the challenger.
    """
    if decision in ("promoted", "kept"):
        challenger = alias_version(client, name, CHALLENGER)
        if challenger is not None and str(challenger.version) == version:
            with asking(
                f"remove alias {CHALLENGER!r} from version {version} of registered model {name!r}",
                "MANAGE on it (MLflow asks MANAGE for deleting an alias)",
            ):
                client.delete_registered_model_alias(name, CHALLENGER)
    alias = {"promoted": CHAMPION, "rejected": CHALLENGER}.get(decision)
    if alias is None:
        return
    with asking(
        f"move alias {alias!r} of registered model {name!r} to version {version}", "EDIT on it"
    ):
        client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:
        log.info("%s version %s is now @%s", name, version, CHAMPION)
    else:
        log.info("%s version %s is @%s; @%s unchanged", name, version, CHALLENGER, CHAMPION)
