"""The package stage: the registry's ``champion`` into the BentoML store, and a Bento around it.

Two steps, each idempotent for the same inputs:

1. :func:`import_champion` resolves ``models:/<name>@champion`` to its version and imports that
   MLflow model into the BentoML model store (``bentoml.mlflow.import_model``). The BentoML model
   is labelled with the registered name, version and run, and carries the version's metrics and
   lineage in its metadata, so the service can answer ``model_info`` without the tracking server.
   The same champion version already in the store is reused, not imported again.
2. :func:`build_bento` runs ``bentoml build`` (``python -m bentoml``, no wrapper) on a build
   context assembled from ``serving/``, the library modules the service imports (so the Bento
   imports ``recommender`` without the project installed; ``stack/``, ``training/`` and the
   other stages stay out) and the serving requirement sets the model needs
   (:mod:`recommender.serving.bento_contents`: Keras only for a family scored by its graph; the
   OTLP exporter only for ``serve.inference_log_exporter: otlp``).
   The model tag and the ``serve`` limits go in as Bento arguments. A Bento already built from the
   same files, model and arguments is reused.

A catalog over ``serve.exact_max_items`` gets an approximate index (:func:`build_ann`,
:mod:`recommender.scoring.ann`) in the imported model's ``ann/`` folder, built and checked before
the entry is marked finished; its record (recall measured at build, or why ranking stays exact)
goes into ``package.json``. The model's labels carry those settings (:func:`ann_label`).

``BENTOML_HOME`` decides which store both steps use (:func:`use_bentoml_home`).

Crash safety. BentoML saves a model or a Bento by making its folder in the store and then copying
into it, so a process killed in between leaves a folder that looks like an entry (for a model,
even its ``model.yaml``) but is not one. Every entry this stage finishes gets a marker file,
written last and atomically (:data:`FINISHED`); before it reads the store, the stage removes
entries of its own names that lack it (:func:`sweep_unfinished`). An entry is reused only when it
is finished, and the champion is loaded and scored from the store's copy
(:func:`verify_model`) before a Bento is built around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recommender import tracking
from recommender.core import failpoints
from recommender.core.config import Params, ServeConfig
from recommender.core.errors import RecommenderError
from recommender.core.io import write_json, write_text

log = logging.getLogger("recommender")

ALIAS = "champion"
#: Files of ``serving/`` that go into the Bento (the no-op benchmark service stays out).
SERVING_FILES = ("service.py", "bentofile.yaml")
#: The service class, as ``bentoml build`` and ``bentoml serve`` address it.
SERVICE = "service:Recommender"
#: The Bento's name (``bentofile.yaml``'s ``name``).
BENTO_NAME = "recommender"
#: Marker file this stage writes last into each store entry it finished (model or Bento).
FINISHED = ".recommender-finished"
#: Folder of the BentoML model holding the ANN index (:mod:`recommender.scoring.ann`).
ANN_DIR = "ann"
#: The model entry's record of its ANN decision (:func:`build_ann`).
ANN_RECORD = "ann-record.json"
#: How many (user, item) pairs and users :func:`verify_model` scores.
VERIFY_PAIRS = 8


class PackagingError(RecommenderError):
    """The champion cannot be imported or built into a Bento."""


class NoChampion(PackagingError):
    """No registered version carries the alias (no model has passed the register gate yet)."""


@dataclass(frozen=True)
class Champion:
    """The registered model version behind an alias, with what the service reports about it."""

    registered_model: str
    alias: str
    version: str
    run_id: str
    #: The pinned URI (``models:/<name>/<version>``): what the alias pointed to when packaged.
    model_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """BentoML model labels that identify this version (what idempotency compares)."""
        return {
            "registered_model": self.registered_model,
            "registered_version": self.version,
            "run_id": self.run_id,
        }

    def metadata(self) -> dict[str, Any]:
        """Everything ``model_info`` serves."""
        return asdict(self)

    @property
    def content_digest(self) -> str | None:
        """The bundle digest register recorded on this version (None for an older version)."""
        from recommender.scoring.bundle import CONTENT_TAG

        return self.tags.get(f"version.{CONTENT_TAG}")


def use_bentoml_home(path: str | Path) -> Path:
    """Point BentoML (this process and its children) at the store in ``path``.

    BentoML resolves its home once per process; if that already happened for another folder,
    importing or listing would silently use the wrong store, so this refuses instead.
    """
    home = Path(path).resolve()
    os.environ["BENTOML_HOME"] = str(home)
    from recommender.serving.bentoml_internals import bentoml_home

    current = bentoml_home().resolve()
    if current != home:
        raise PackagingError(
            f"BentoML already uses the store {current} in this process; cannot switch to {home} "
            "(run the package step in a fresh process)"
        )
    return home


def bento_model_name(registered_model: str) -> str:
    """A valid BentoML tag name (lowercase letters, digits, ``-_.``) for a registered model."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", registered_model.lower()).strip("-_.")
    if not name:
        raise PackagingError(f"cannot derive a BentoML model name from {registered_model!r}")
    return name[:63]


def find_champion(registered_model: str, alias: str = ALIAS) -> Champion:
    """The version ``alias`` points to, its run's metrics and its lineage tags."""
    from mlflow import MlflowClient

    from recommender.serving.api import select_metrics
    from recommender.tracking.registry import alias_version

    uri = tracking.redact(tracking.configure())
    client = MlflowClient()
    try:
        version = alias_version(client, registered_model, alias)
    except Exception as exc:  # noqa: BLE001 (MLflow raises many kinds; all mean "unreadable")
        # Only "no such model / no such alias" means nothing to package; anything else (the
        # store unreachable, a broken database) must fail the stage, not look like a quiet no-op.
        raise PackagingError(f"cannot read the registry at {uri}: {exc}") from None
    if version is None:
        raise NoChampion(
            f"registered model {registered_model!r} has no version with alias {alias!r} in "
            f"{uri} (run the register stage first: it sets the alias when a model passes the gate)"
        )
    run = client.get_run(version.run_id)
    # MLflow's own tags and the run's owner (host, pid) are not the model's lineage.
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "recommender."))}
    tags.update({f"version.{k}": v for k, v in (version.tags or {}).items()})
    return Champion(
        registered_model=registered_model,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        model_uri=f"models:/{registered_model}/{version.version}",
        metrics=select_metrics(run.data.metrics),
        tags=dict(sorted(tags.items())),
    )


def ann_label(serve: ServeConfig) -> str:
    """The serve settings the model's ANN index (or its absence) follows: a model entry built
    under other settings is not reused."""
    return f"exact_max_items-{serve.exact_max_items}.min_recall-{serve.ann_min_recall}"


def import_champion(champion: Champion, serve: ServeConfig | None = None) -> tuple[str, bool]:
    """Import the champion into the BentoML store unless that version is there already (built
    under the same ANN settings).

    Returns:
        The BentoML model tag and whether a new import happened.
    """
    import bentoml

    name = bento_model_name(champion.registered_model)
    wanted = {**champion.labels(), "ann": ann_label(serve or ServeConfig())}
    try:
        existing = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # no model of that name yet
        existing = []
    for model in existing:
        if {k: model.info.labels.get(k) for k in wanted} == wanted and _finished(model.path):
            return str(model.tag), False
    home = os.environ.get("BENTOML_HOME", ".")
    with failpoints.during_copies("package.model_copy", under=Path(home) / "models"):
        model = bentoml.mlflow.import_model(
            name, model_uri=champion.model_uri, labels=wanted, metadata=champion.metadata()
        )
    return str(model.tag), True


def _finished(entry: str | Path) -> bool:
    return (Path(entry) / FINISHED).is_file()


def mark_finished(entry: str | Path) -> None:
    """Write the marker last: from now on the entry may be reused."""
    write_text("finished by the package stage\n", Path(entry) / FINISHED)


def sweep_unfinished(home: str | Path, model_name: str) -> list[Path]:
    """Remove the store entries of our names that the stage did not finish (a killed copy).

    Only the project's own names are looked at (``models/<model_name>/``, ``bentos/recommender/``):
    anything else in the store belongs to someone else. ``latest`` pointers to a removed entry are
    dropped too; BentoML recreates them from what is left.
    """
    removed = []
    home = Path(home)
    for kind, name in (("models", model_name), ("bentos", BENTO_NAME)):
        folder = home / kind / name
        if not folder.is_dir():
            continue
        for entry in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not _finished(entry):
                shutil.rmtree(entry)
                removed.append(entry)
        latest = folder / "latest"
        if latest.is_file() and not (folder / latest.read_text().strip()).is_dir():
            latest.unlink()
    for entry in removed:
        log.warning("removed %s: an unfinished store entry (a killed earlier run)", entry)
    return removed


def verify_model(model_tag: str, champion: Champion) -> None:
    """Load the store's copy of the champion and score a few pairs, users and items with it.

    What ``bentoml serve`` would load, checked before a Bento is built around it: a champion that
    cannot load (a truncated file, a bundle from an incompatible version) fails the stage here,
    naming the version, instead of producing a Bento whose server cannot start.
    """
    import bentoml
    import numpy as np

    from recommender.scoring.bundle import ModelBundle

    where = f"{champion.registered_model} version {champion.version} ({model_tag})"
    try:
        bundle = ModelBundle.load(
            tracking.bundle_dir(bentoml.models.get(model_tag).path_of("mlflow_model")),
            expected_digest=champion.content_digest,
        )
        n = min(VERIFY_PAIRS, bundle.n_users, bundle.n_items)
        users, items = np.arange(1, n + 1), np.arange(1, n + 1)
        ratings = bundle.predict(users, items)
        top = bundle.recommend(users[:2], min(5, bundle.n_items))
    except Exception as exc:  # noqa: BLE001 (whatever the cause, this champion cannot be served)
        raise PackagingError(
            f"the champion {where} cannot be loaded and scored: {type(exc).__name__}: "
            f"{str(exc)[:500]}. Nothing was built. Register a working model (rerun train and "
            f"register) or point the alias at a version that loads."
        ) from None
    if not np.all(np.isfinite(ratings)) or top is None:
        raise PackagingError(f"the champion {where} scores non-finite ratings: nothing was built")


def build_ann(model_tag: str, serve: ServeConfig) -> dict[str, Any]:
    """Build the ANN index of a large catalog into the model's ``ann/`` folder (or record why
    the model ranks exactly) and return the record (also ``ann/ann.json`` when an index is used).

    Runs on a model entry not yet marked finished, so a killed build is swept with the entry.
    The index is checked by reloading it and ranking with it before it counts.
    """
    import bentoml

    from recommender.scoring.ann import AnnIndex, plan_index, ranking_factors
    from recommender.scoring.bundle import FACTORS_FILE, RETRIEVAL_FILE, ModelBundle

    model = bentoml.models.get(model_tag)
    folder = tracking.bundle_dir(model.path_of("mlflow_model"))
    if (folder / FACTORS_FILE).is_file() or (folder / RETRIEVAL_FILE).is_file():
        bundle = ModelBundle.load(folder)  # scored by its factors: no Keras loaded
        factors, seen = ranking_factors(bundle), bundle.seen
    else:  # a family scored by its Keras graph ranks exactly; no need to load it again
        factors, seen = None, None
    index, record = plan_index(
        factors,
        exact_max_items=serve.exact_max_items,
        min_recall=serve.ann_min_recall,
        seen=seen,
    )
    ann_dir = Path(model.path_of(ANN_DIR))
    if index is not None and factors is not None:
        index.save(ann_dir)
        AnnIndex.load(ann_dir, factors).recommend(np.arange(1, 3), 5, seen=seen)
    write_json(record, Path(model.path) / ANN_RECORD)
    if not record["used"]:
        log.info("ANN index: none (%s)", record["reason"])
    else:
        log.info(
            "ANN index: %d lists, nprobe %d, recall@10 %.3f (similar_items %.3f) on %d users",
            record["nlist"],
            record["nprobe"],
            record["recall_at_10"],
            record["similar_recall_at_10"],
            record["recall_users"],
        )
    return record


def ann_record(model_tag: str) -> dict[str, Any]:
    """What :func:`build_ann` recorded for a model in the store."""
    import bentoml

    path = Path(bentoml.models.get(model_tag).path) / ANN_RECORD
    if not path.is_file():
        raise PackagingError(f"{path}: missing (expected the ANN record of a finished model)")
    return dict(json.loads(path.read_text()))


def build_context(
    serving_dir: str | Path,
    dest: str | Path,
    requirements: str | Path | None = None,
    *,
    keras: bool = False,
    ann: bool = False,
    otlp: bool = False,
) -> Path:
    """Assemble the Bento's build context: ``serving/``'s files, the library modules the service
    imports (:func:`~recommender.serving.bento_contents.modules`) and the files it reads
    (``DATA_FILES``: the inference log's config), the Swagger UI assets, and
    ``requirements.txt``: the serving requirement sets for a model that needs Keras (``keras``)
    and FAISS (``ann``) or not, and for an inference log sent over OTLP (``otlp``), each pin
    checked against ``requirements`` (the lock) if given."""
    import recommender
    from recommender.serving import bento_contents, swagger

    serving_dir, dest = Path(serving_dir), Path(dest)
    for name in SERVING_FILES:
        if not (serving_dir / name).is_file():
            raise PackagingError(f"{serving_dir / name}: missing (expected the service files)")
        shutil.copy2(serving_dir / name, dest / name)
    root = Path(recommender.__file__).parent.parent
    sets = bento_contents.sets_for(keras=keras, ann=ann, otlp=otlp)
    for module in bento_contents.modules(serving_dir / "service.py", sets, root):
        (dest / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / module, dest / module)
    shutil.copytree(swagger.ASSETS, dest / swagger.ASSETS.relative_to(root))
    for name in bento_contents.DATA_FILES:
        shutil.copy2(root / name, dest / name)
    if requirements is not None and not Path(requirements).is_file():
        raise PackagingError(f"{requirements}: missing (expected the pinned requirements)")
    try:
        text = bento_contents.requirements_text(sets, lock=requirements)
    except ValueError as exc:
        raise PackagingError(str(exc)) from None
    (dest / "requirements.txt").write_text(text)
    return dest


def model_needs(model_tag: str) -> dict[str, bool]:
    """What serving the imported model takes beyond the base set: Keras (a family scored by its
    Keras graph, no factors file in its bundle) and FAISS (an ANN index in the model)."""
    import bentoml

    from recommender.scoring.bundle import FACTORS_FILE, RETRIEVAL_FILE

    model = bentoml.models.get(model_tag)
    folder = tracking.bundle_dir(model.path_of("mlflow_model"))
    factors = (folder / FACTORS_FILE).is_file() or (folder / RETRIEVAL_FILE).is_file()
    return {"keras": not factors, "ann": Path(model.path_of(ANN_DIR)).is_dir()}


def model_id_type(model_tag: str) -> str:
    """The raw id type (``int``/``str``) of an imported model, from its bundle's dataset.json."""
    import bentoml

    from recommender.core.errors import DataError

    try:
        folder = tracking.bundle_dir(bentoml.models.get(model_tag).path_of("mlflow_model"))
    except DataError as exc:
        raise PackagingError(str(exc)) from None
    info = folder / "dataset.json"
    if not info.is_file():
        raise PackagingError(f"{info}: missing (expected the model bundle's dataset.json)")
    return str(json.loads(info.read_text()).get("id_type", "int"))


def build_args(model_tag: str, id_type: str, serve: ServeConfig) -> dict[str, str]:
    """The Bento arguments the service reads (``recommender.serving.api.ServiceArgs``)."""
    args = {"model_tag": model_tag, "id_type": id_type}
    return {**args, **{k: str(v) for k, v in serve.model_dump().items()}}


def build_bento(
    serving_dir: str | Path,
    model_tag: str,
    serve: ServeConfig,
    requirements: str | Path | None = None,
) -> tuple[str, bool]:
    """``bentoml build`` the service for ``model_tag``, unless the same Bento exists already.

    Returns:
        The Bento tag and whether a new Bento was built.
    """
    import bentoml

    args = build_args(model_tag, model_id_type(model_tag), serve)
    with tempfile.TemporaryDirectory(prefix="bento-ctx-") as tmp:
        otlp = serve.inference_log and serve.inference_log_exporter == "otlp"
        ctx = build_context(serving_dir, tmp, requirements, **model_needs(model_tag), otlp=otlp)
        files = sorted(p for p in ctx.iterdir())
        digest = hashlib.sha256(
            (tracking.file_digest(files) + json.dumps(args, sort_keys=True)).encode()
        ).hexdigest()[:16]
        labels = {"bento_model": model_tag, "build_digest": digest}
        for bento in bentoml.bentos.list():
            if {k: bento.info.labels.get(k) for k in labels} == labels and _finished(bento.path):
                return str(bento.tag), False
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "build",
            str(ctx),
            "--bentofile",
            str(ctx / "bentofile.yaml"),
            "--output",
            "tag",
            *(x for k, v in labels.items() for x in ("--label", f"{k}={v}")),
            *(x for k, v in args.items() for x in ("--arg", f"{k}={v}")),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ctx, env=_env())
    if proc.returncode < 0:
        raise PackagingError(f"bentoml build was killed (signal {-proc.returncode})")
    if proc.returncode != 0:
        raise PackagingError(f"bentoml build failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    match = re.search(r"__tag__:(\S+)", proc.stdout)
    if not match:
        raise PackagingError(f"bentoml build printed no tag:\n{proc.stdout[-2000:]}")
    mark_finished(bentoml.bentos.get(match.group(1)).path)
    return match.group(1), True


def package(
    params: Params,
    serving_dir: str | Path,
    out_path: str | Path,
    bentoml_home: str | Path,
    requirements: str | Path | None = None,
) -> dict[str, Any]:
    """Import the champion, build its Bento, and write ``out_path`` (``reports/package.json``).

    With no champion yet (every model so far failed the register gate) there is nothing to serve:
    the record says so (``packaged: false``) and the stage succeeds, as register does when it
    rejects a model; ``make serve`` then explains instead of serving something ungated.
    """
    tracking.connect()  # before BentoML's import: a store that is down fails in seconds
    home = use_bentoml_home(bentoml_home)
    sweep_unfinished(home, bento_model_name(params.tracking.registered_model))
    try:
        champion = find_champion(params.tracking.registered_model)
    except NoChampion as exc:
        record = {
            "packaged": False,
            "registered_model": params.tracking.registered_model,
            "alias": ALIAS,
            "reason": str(exc),
        }
        write_json(record, out_path)
        log.warning("nothing to package: %s", exc)
        return record
    model_tag, imported = import_champion(champion, params.serve)
    verify_model(model_tag, champion)
    if imported:
        ann = build_ann(model_tag, params.serve)
        mark_finished(bentoml_model_path(model_tag))
    else:
        ann = ann_record(model_tag)
    bento_tag, built = build_bento(serving_dir, model_tag, params.serve, requirements)
    record = {
        "packaged": True,
        "registered_model": champion.registered_model,
        "alias": champion.alias,
        "version": champion.version,
        "run_id": champion.run_id,
        "model_uri": champion.model_uri,
        "bento_model": model_tag,
        "bento": bento_tag,
        "service": SERVICE,
        "serve": params.serve.model_dump(),
        "metrics": {k: v for k, v in champion.metrics.items() if k.startswith("test_")},
        "ann": ann,
    }
    write_json(record, out_path)
    log.info(
        "%s v%s -> BentoML model %s (%s), Bento %s (%s)",
        champion.registered_model,
        champion.version,
        model_tag,
        "imported" if imported else "already in the store",
        bento_tag,
        "built" if built else "unchanged",
    )
    return {**record, "imported": imported, "built": built}


def bentoml_model_path(model_tag: str) -> str:
    import bentoml

    return str(bentoml.models.get(model_tag).path)


def _env() -> dict[str, str]:
    from recommender.core.telemetry import QUIET, TELEMETRY_OFF

    return {**TELEMETRY_OFF, **QUIET, **os.environ}
