"""The trained model together with everything needed to use it on raw ids.

A bundle is a folder: the Keras model, its exported factors, the id vocabularies, the feature
spec, the rating scale, the item catalog and the train ratings per user. The train stage writes it
(``models/``), MLflow stores it inside the registered model, and evaluate, register and the
BentoML service all load it with :meth:`ModelBundle.load` and score through the same methods, so
an offline metric and a served prediction come from the same code.

A family with exported factors scores with NumPy alone: loading its bundle does not import
TensorFlow (seconds, and most of a stage's memory) unless something asks for its Keras model
(:attr:`ModelBundle.model`).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.config import RatingScale
from recommender.core.errors import DataError
from recommender.core.schema import DatasetInfo
from recommender.dataset.features import FeatureSpec
from recommender.dataset.processed import Processed
from recommender.dataset.vocabulary import Vocabulary, load_vocabularies
from recommender.scoring.factors import Factors
from recommender.scoring.ranking import SeenItems, TopK, rank, similar_items

MODEL_FILE = "model.keras"
FACTORS_FILE = "factors.npz"
RETRIEVAL_FILE = "retrieval.npz"
SEEN_FILE = "seen.npz"
META_FILE = "meta.json"
#: The bundle's :func:`content_digest`, recorded by :meth:`ModelBundle.save`.
DIGEST_FILE = "content.sha256"
#: The SHA-256 of every other file's bytes, in ``sha256sum`` format (``sha256sum -c`` reads it),
#: written last by :meth:`ModelBundle.save` and checked by :meth:`ModelBundle.load`.
MANIFEST_FILE = "files.sha256"
#: The registry tag of a model version that holds its bundle's :func:`content_digest`.
CONTENT_TAG = "lineage.content_sha256"
COPIED = ("vocab.json", "features.json", "dataset.json", "items.parquet")

log = logging.getLogger("recommender")


@dataclass
class ModelBundle:
    """A trained recommender that speaks raw ids.

    Example:
        >>> bundle = ModelBundle.load("models")
        >>> bundle.predict_raw([196, 186], [242, 302])      # ratings on the scale
        >>> bundle.recommend(bundle.user_index(196), k=10)  # TopK of item indices
    """

    #: The rating model as NumPy (``predict``); None for a family that is not a dot product.
    factors: Factors | None
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    info: DatasetInfo
    spec: FeatureSpec
    catalog: pd.DataFrame
    seen: SeenItems
    #: Number of train ratings per item index (row 0 = 0), for cold-start recommendations.
    popularity: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    #: What ranking scores with, for a family trained to rank (``recommend``, ``similar``);
    #: None: ranking uses the predicted ratings.
    retrieval: Factors | None = None
    #: An approximate index over the ranking factors (:class:`~recommender.scoring.ann.AnnIndex`),
    #: which the service attaches for a catalog over ``serve.exact_max_items``: ``recommend``
    #: ranks its shortlists. None ranks every item (exact), as evaluation does.
    ann: Any = None
    #: The Keras model (see :attr:`model`); None until it is needed, for a loaded bundle.
    _model: Any = field(default=None, repr=False)
    #: The ``model.keras`` a loaded bundle reads :attr:`model` from.
    _model_file: Path | None = field(default=None, repr=False)
    _score_fn: Any = None

    @property
    def model(self) -> Any:
        """The Keras model. A loaded bundle reads it on first use (``safe_mode=True``: no
        arbitrary code runs); one whose factors do all the scoring never needs it."""
        if self._model is None and self._model_file is not None:
            self._model = _load_keras(self._model_file)
        return self._model

    # --- building and files ---------------------------------------------------------------------

    @classmethod
    def from_training(cls, model: Any, processed: Processed, meta: dict[str, Any]) -> ModelBundle:
        """Bundle a freshly trained model with the preprocess stage's vocabularies and catalog."""
        train = processed.train
        n_users = len(processed.user_vocab) - 1
        n_items = len(processed.item_vocab) - 1
        return cls(
            _model=model,
            factors=model.factors(),
            retrieval=model.retrieval_factors(),
            user_vocab=processed.user_vocab,
            item_vocab=processed.item_vocab,
            info=processed.info,
            spec=processed.feature_spec,
            catalog=processed.catalog,
            seen=SeenItems(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), n_users),
            popularity=np.bincount(train["item_idx"].to_numpy(), minlength=n_items + 1),
            meta={"family": type(model).__name__, "global_mean": _global_mean(model), **meta},
        )

    def save(self, folder: str | Path, processed_dir: str | Path) -> None:
        """Write the bundle into ``folder`` (vocab and catalog files copied from preprocess).

        Callers that replace an existing bundle write to a staged folder
        (:func:`recommender.core.io.staged_dir`) so a failure leaves the old one in place.
        The bundle's :func:`content_digest` is recorded last (the register stage keys versions by
        it), here where Keras is loaded anyway, so that reading it needs no TensorFlow.
        """
        folder, processed_dir = Path(folder), Path(processed_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / MODEL_FILE)
        if self.factors is not None:
            self.factors.save(folder / FACTORS_FILE)
        if self.retrieval is not None:
            self.retrieval.save(folder / RETRIEVAL_FILE)
        np.savez(
            folder / SEEN_FILE,
            indptr=self.seen.indptr,
            indices=self.seen.indices,
            popularity=self.popularity,
        )
        for name in COPIED:
            (folder / name).write_bytes((processed_dir / name).read_bytes())
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
        (folder / DIGEST_FILE).write_text(content_digest(folder) + "\n")
        write_manifest(folder)

    @classmethod
    def load(cls, folder: str | Path, expected_digest: str | None = None) -> ModelBundle:
        """Load a bundle: its arrays, vocabularies and catalog, and the Keras model when the
        family scores with it (no factors); with factors, :attr:`model` loads it if asked.

        Every file is checked first: a missing one, one whose bytes differ from what
        :meth:`save` recorded in ``files.sha256`` (one changed byte in ``vocab.json`` would
        otherwise swap two users' predictions), or a damaged archive (``model.keras`` or an
        ``.npz`` that is truncated or fails its CRC), raises :class:`DataError` naming it,
        whether or not the Keras model is loaded now.

        Args:
            folder: The bundle folder.
            expected_digest: The content digest the registry recorded for this model (the
                version's :data:`CONTENT_TAG`); the bundle's own record must equal it.
        """
        folder = Path(folder)
        for name in (MODEL_FILE, SEEN_FILE, META_FILE, *COPIED):
            if not (folder / name).is_file():
                raise DataError(folder / name, "missing", expected="a model bundle folder")
        if problem := damaged_file(folder):  # the most telling words for a truncated archive
            raise DataError(folder, problem, expected="a model bundle folder")
        check_manifest(folder)
        if expected_digest is not None:
            check_recorded_digest(folder, expected_digest)
        factors = Factors.load(folder / FACTORS_FILE) if (folder / FACTORS_FILE).exists() else None
        retrieval_file = folder / RETRIEVAL_FILE
        retrieval = Factors.load(retrieval_file) if retrieval_file.exists() else None
        user_vocab, item_vocab = load_vocabularies(folder / "vocab.json")
        with np.load(folder / SEEN_FILE, allow_pickle=False) as z:
            seen = SeenItems.__new__(SeenItems)
            seen.indptr, seen.indices = z["indptr"], z["indices"]
            seen.n_users = len(seen.indptr) - 2
            popularity = z["popularity"]
        bundle = cls(
            factors=factors,
            user_vocab=user_vocab,
            item_vocab=item_vocab,
            info=DatasetInfo.read(folder / "dataset.json"),
            spec=FeatureSpec.from_json(json.loads((folder / "features.json").read_text())),
            catalog=pd.read_parquet(folder / "items.parquet"),
            seen=seen,
            popularity=popularity,
            meta=json.loads((folder / META_FILE).read_text()),
            retrieval=retrieval,
            _model_file=folder / MODEL_FILE,
        )
        if factors is None:  # scored by the model's graph: load it now, so a bad model fails here
            bundle._model = _load_keras(folder / MODEL_FILE)
        return bundle

    # --- scoring: the one implementation evaluate, register and the service share ---------------

    @property
    def scale(self) -> RatingScale:
        return self.info.rating_scale

    @property
    def n_users(self) -> int:
        return len(self.user_vocab) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_vocab) - 1

    def user_index(self, user_ids: Any) -> np.ndarray:
        """Raw user ids -> indices (0 for ids unseen in training)."""
        return self.user_vocab.encode(np.atleast_1d(np.asarray(user_ids)))

    def item_index(self, item_ids: Any) -> np.ndarray:
        """Raw item ids -> indices (0 for ids unseen in training)."""
        return self.item_vocab.encode(np.atleast_1d(np.asarray(item_ids)))

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Unclipped scores of (user, item) index pairs, float32.

        Factor families use NumPy on the exported factors; the others a compiled ``tf.function``
        of the model's scoring graph (never per-call ``model.predict``, which is ~10x slower).
        """
        user_idx = np.asarray(user_idx, dtype=np.int32).reshape(-1)
        item_idx = np.asarray(item_idx, dtype=np.int32).reshape(-1)
        if self.factors is not None:
            return self.factors.predict(user_idx, item_idx).astype(np.float32)
        out = np.empty(user_idx.size, dtype=np.float32)
        step = 65_536  # bounds memory for a whole-test-set call
        for s in range(0, user_idx.size, step):
            out[s : s + step] = self._graph_score(user_idx[s : s + step], item_idx[s : s + step])
        return out

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Predicted ratings of (user, item) index pairs, clipped to the rating scale."""
        return np.clip(self.score(user_idx, item_idx), self.scale.min, self.scale.max)

    def predict_raw(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Predicted ratings of raw (user_id, item_id) pairs; unknown ids use the OOV row."""
        return self.predict(self.user_index(user_ids), self.item_index(item_ids))

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Ranking scores of every item index (columns) for each user index (rows): the
        retrieval scores of a family trained to rank, else the unclipped predicted ratings."""
        users = np.asarray(users, dtype=np.int32).reshape(-1)
        if self.retrieval is not None:
            return self.retrieval.score(users).astype(np.float32)
        if self.factors is not None:
            return self.factors.score(users).astype(np.float32)
        cols = np.arange(self.n_items + 1, dtype=np.int32)
        return self.score(np.repeat(users, cols.size), np.tile(cols, users.size)).reshape(
            users.size, cols.size
        )

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        exclude_rated: bool = True,
        allowed_items: np.ndarray | None = None,
    ) -> TopK:
        """Top-``k`` item indices and scores per user index (never row 0; rated items optionally).

        The one ranking path of evaluation, the registry's gate and the service, so that what
        is measured offline is what the endpoint answers:

        - an unknown user (index 0) has rated nothing the model knows: it gets the most-rated
          items (:meth:`popular`), the cold-start answer;
        - a known user is ranked by :meth:`score_all` through
          :func:`~recommender.scoring.ranking.rank` (a block of users at a time, so memory stays
          bounded), or by the shortlists of :attr:`ann` when one is attached.

        Args:
            users: User indices (0 = unknown user).
            k: How many items per user.
            exclude_rated: Leave out items the user rated in training.
            allowed_items: If given, a boolean mask over item indices; others are left out
                (e.g. a genre filter).
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        cold = users == 0
        if cold.all():
            return self.popular(users, k, exclude_rated, allowed_items)
        seen = self.seen if exclude_rated else None
        known = users if not cold.any() else users[~cold]
        if self.ann is not None:
            top = self.ann.recommend(known, k, seen=seen, allowed=allowed_items)
        else:
            top = rank(self.score_all, known, k, self.n_items + 1, seen=seen, allowed=allowed_items)
        if not cold.any():
            return top
        popular = self.popular(users[cold], k, exclude_rated, allowed_items)
        items = np.empty((users.size, top.items.shape[1]), dtype=top.items.dtype)
        scores = np.empty((users.size, top.scores.shape[1]), dtype=np.float64)
        items[~cold], scores[~cold] = top.items, top.scores
        items[cold], scores[cold] = popular.items, popular.scores
        return TopK(items, scores)

    def popular(
        self,
        users: np.ndarray,
        k: int,
        exclude_rated: bool = True,
        allowed_items: np.ndarray | None = None,
    ) -> TopK:
        """The ``k`` most-rated training items per user (the popularity baseline, and the
        cold-start answer for an unknown user, index 0, who has rated nothing)."""
        counts = self.popularity.astype(np.float64)

        def score_rows(block: np.ndarray) -> np.ndarray:
            return np.broadcast_to(counts, (block.size, counts.size))

        seen = self.seen if exclude_rated else None
        return rank(score_rows, users, k, counts.size, seen=seen, allowed=allowed_items)

    def similar(self, item_idx: int, k: int) -> TopK:
        """Items nearest to ``item_idx`` by cosine similarity of their embeddings (the retrieval
        space for a family trained to rank), through :attr:`ann` when one is attached."""
        if self.ann is not None:
            return self.ann.similar(int(item_idx), k)
        if self.retrieval is not None:
            vectors = self.retrieval.item_vectors
        elif self.factors is not None:
            vectors = self.factors.item_vectors
        else:
            vectors = self.model.item_vectors()
        return similar_items(vectors, int(item_idx), k)

    def _graph_score(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        if self._score_fn is None:
            import tensorflow as tf

            model = self.model
            spec = tf.TensorSpec(shape=(None,), dtype=tf.int32)

            @tf.function(input_signature=[spec, spec], reduce_retracing=True)
            def score_fn(u: Any, i: Any) -> Any:
                return tf.reshape(model.score({"user": u, "item": i}), (-1,))

            self._score_fn = score_fn
        return np.asarray(self._score_fn(user_idx, item_idx), dtype=np.float32)


def _load_keras(path: Path) -> Any:
    """A saved model of this project's families, with ``safe_mode=True`` (no arbitrary code)."""
    from recommender.core import imports

    keras = imports.keras()  # first, before recommender.models imports it the costlier way
    import recommender.models.factory  # noqa: F401  (imports every family: registers them with Keras)

    return keras.saving.load_model(path, safe_mode=True, compile=False)


def damaged_file(folder: str | Path) -> str | None:
    """The first zip archive of the bundle (``model.keras``, ``*.npz``) that cannot be read, in
    words; None when every one is whole (each member's CRC is checked, no TensorFlow needed)."""
    for path in sorted(Path(folder).glob("*")):
        if path.suffix not in (".keras", ".npz") or not path.is_file():
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as err:
            size = path.stat().st_size
            return f"{path.name} is damaged (truncated or corrupt: {size} bytes, {err})"
        if bad is not None:
            return f"{path.name} is damaged (its member {bad} fails its CRC check)"
    return None


def _file_sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_manifest(folder: str | Path) -> None:
    """Record the SHA-256 of every file of the bundle (but the manifest) in ``files.sha256``."""
    folder = Path(folder)
    lines = [
        f"{_file_sha256(path)}  {path.name}\n"
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    ]
    (folder / MANIFEST_FILE).write_text("".join(lines))


def check_manifest(folder: str | Path) -> None:
    """Raise :class:`DataError` naming the first file whose bytes differ from ``files.sha256``.

    A bundle saved before manifests were written has none: its zip CRCs are all that is checked.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        log.warning("%s has no %s: its files' contents are not checked", folder, MANIFEST_FILE)
        return
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        recorded, _, name = line.partition("  ")
        if len(recorded) != 64 or not name or "/" in name or name in (".", ".."):
            raise DataError(manifest, f"unreadable entry {line[:120]!r}", row=number,
                            expected="'<sha256>  <file name>' as sha256sum writes it")  # fmt: skip
        path = folder / name
        if not path.is_file():
            raise DataError(path, f"missing (listed in {MANIFEST_FILE})", expected="a model bundle")
        actual = _file_sha256(path)
        if actual != recorded:
            raise DataError(
                path,
                f"changed since the model was saved: its SHA-256 is {actual}, {MANIFEST_FILE} "
                f"recorded {recorded}",
                expected="the bundle exactly as the train stage wrote it (re-register the model "
                "or restore the file)",
            )


def check_recorded_digest(folder: str | Path, expected: str) -> None:
    """Raise :class:`DataError` unless the bundle's ``content.sha256`` is ``expected``."""
    record = Path(folder) / DIGEST_FILE
    recorded = record.read_text().strip() if record.is_file() else "(none)"
    if recorded != expected:
        raise DataError(
            record,
            f"this bundle's content digest is {recorded}, but the registry recorded {expected} "
            "for this model version (lineage.content_sha256): it is not the model that was "
            "registered",
            expected="the registered model's own files",
        )


def _global_mean(model: Any) -> float:
    return float(getattr(model, "global_mean", 0.0))


def content_digest(folder: str | Path) -> str:
    """SHA-256 of what a bundle computes, not of how its files happen to be written.

    Keras stamps ``model.keras`` (a zip) with the save time, NumPy's ``.npz`` zips carry
    timestamps, and Keras names unnamed layers with a process-wide counter (``embedding_3``), so
    two identical trainings give different bytes. This hashes the arrays instead: the model's
    weights in the order the model tracks them (its architecture follows from ``meta.json``'s
    family and knobs and the vocabularies' sizes, hashed too), every ``.npz`` array, the other
    files' bytes, and ``meta.json`` without its timings and throughputs. The register stage keys
    versions by it, so an identical retrain reuses its version. Reading the weights takes Keras
    (TensorFlow), so :meth:`ModelBundle.save` records the digest for :func:`recorded_digest`.
    """
    import hashlib

    digest = hashlib.sha256()

    def add_array(name: str, array: np.ndarray) -> None:
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())

    for path in sorted(Path(folder).iterdir()):
        if path.name in (DIGEST_FILE, MANIFEST_FILE):
            continue  # the records of this digest and of the files' bytes, written after it
        digest.update(path.name.encode())
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for key in sorted(z.files):
                    add_array(key, z[key])
        elif path.name == MODEL_FILE:
            model = _load_keras(path)
            for i, weight in enumerate(model.weights):
                add_array(str(i), np.asarray(weight))
        elif path.name == META_FILE:
            meta = json.loads(path.read_text())
            # Timings and throughputs (fit_seconds, fit_ratings_per_second) vary run to run.
            stable = {k: v for k, v in meta.items() if not k.endswith(("_seconds", "_per_second"))}
            digest.update(json.dumps(stable, sort_keys=True).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def recorded_digest(folder: str | Path) -> str:
    """The bundle's :func:`content_digest`: as :meth:`ModelBundle.save` recorded it, or computed
    (with Keras) for a bundle saved before the digest was recorded."""
    record = Path(folder) / DIGEST_FILE
    if record.is_file():
        value = record.read_text().strip()
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    return content_digest(folder)
