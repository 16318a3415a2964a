"""What a service worker does when it starts: load the champion (and its ANN index), or stop.

A champion that cannot load ends ``bentoml serve`` with a non-zero status and a one-line error
naming the model (:func:`cannot_serve`), instead of being restarted forever.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from recommender.serving.api import ServingModel
from recommender.serving.bentoml_internals import worker_index
from recommender.serving.http import one_line


def load_serving_model(bento_model: Any, limits: dict[str, int], id_type: str) -> ServingModel:
    """The :class:`ServingModel` of a BentoML model the package stage imported.

    The bundle inside the imported MLflow model is loaded by this Bento's own library (Keras with
    safe_mode): the model's logged code is not run, so a champion logged by an older version of
    the project serves with the code this Bento was built with. Any failure stops the worker.
    """
    from recommender.tracking.layout import bundle_dir

    where = f"the model {bento_model.tag}"
    try:
        folder = Path(bundle_dir(bento_model.path_of("mlflow_model")))
    except Exception as exc:
        cannot_serve(f"cannot load {where}: {one_line(exc)}", exc)
    # A missing or damaged file (a truncated model.keras, an .npz failing its CRC) is named by
    # the load itself, in seconds, before any TensorFlow (a factor family needs none). Each
    # file's bytes are checked against the bundle's files.sha256, and its digest against the one
    # register recorded on the version (the package stage's metadata).
    tags = bento_model.info.metadata.get("tags") or {}
    try:
        from recommender.scoring.bundle import CONTENT_TAG, ModelBundle

        bundle = ModelBundle.load(folder, expected_digest=tags.get(f"version.{CONTENT_TAG}"))
    except Exception as exc:
        message = one_line(f"{type(exc).__name__}: {exc}", limit=400)
        cannot_serve(f"cannot load {where} from {folder}: {message}", exc)
    ann = _load_ann(Path(bento_model.path_of("ann")), bundle, where)
    info = {**bento_model.info.metadata, "bento_model": str(bento_model.tag)}
    model = ServingModel(bundle, info, limits, ann=ann)
    if model.id_type != id_type:
        cannot_serve(
            f"the model {bento_model.tag} takes {model.id_type} ids but the service was built "
            f"for {id_type} ids (rebuild the Bento with `make bento`)",
            None,
        )
    # TensorFlow, Keras and MLflow leave millions of long-lived objects behind; freezing them
    # keeps the garbage collector from walking them again during requests (a tail-latency
    # pause, and a per-request cost the no-op service does not pay).
    gc.collect()
    gc.freeze()
    return model


def _load_ann(folder: Path, bundle: Any, where: str) -> Any:
    """The model's ANN index (the package stage built one for a large catalog), or None."""
    if not folder.is_dir():
        return None
    try:
        import faiss

        from recommender.scoring.ann import AnnIndex, ranking_factors

        # One query at a time per worker, and a worker per core: FAISS' own threads would only
        # contend with the other workers.
        faiss.omp_set_num_threads(1)
        factors = ranking_factors(bundle)
        if factors is None:
            raise ValueError("the model has no factors for its ANN index")
        return AnnIndex.load(folder, factors)
    except Exception as exc:
        message = one_line(f"{type(exc).__name__}: {exc}", limit=400)
        cannot_serve(f"cannot load the ANN index of {where} from {folder}: {message}", exc)


def cannot_serve(message: str, exc: BaseException | None) -> NoReturn:
    """Stop: in a ``bentoml serve`` worker, exit at once with ``message`` as the one line on stderr.

    Raising instead would let uvicorn print a traceback and exit 0, and BentoML start the worker
    again. With no worker left, ``bentoml serve`` exits non-zero (the service sets
    ``BENTOML_CONTAINERIZED``). Anywhere else (the service class used directly, in tests) it raises.
    """
    if worker_index() is None:
        raise RuntimeError(message) from exc
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sys.stdout.flush()
    sys.stderr.write(f"{stamp} [ERROR] [recommender] {one_line(message, limit=1000)}\n")
    sys.stderr.flush()
    os._exit(3)  # uvicorn's status for a failed startup
