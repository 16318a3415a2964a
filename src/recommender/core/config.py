"""Typed, strict mirror of ``params.yaml``.

Each DVC stage reads its own section (plus the shared ``seed`` and ``data``). The models forbid
unknown keys and refuse values of the wrong type, so ``dvc exp run -S train.embeding_dim=64`` (a
typo) stops the stage with a message naming the key instead of silently training the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recommender.core.errors import ConfigError

Source = Literal[
    "synthetic",
    "movielens-100k",
    "movielens-1m",
    "movielens-latest-small",
    "movielens-25m",
    "csv",
]


#: The model families ``train.model`` may name (each has its own section under ``train``).
Family = Literal["mf", "biased_mf", "ncf", "hybrid", "autorec", "ensemble", "two_tower"]
FAMILIES: tuple[str, ...] = get_args(Family)


class Section(BaseModel):
    """Base for every params section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RatingScale(Section):
    """The ratings a dataset allows: ``min``, ``min + step``, ..., ``max``."""

    min: float = 1.0
    max: float = 5.0
    step: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> RatingScale:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step}")
        n = (self.max - self.min) / self.step
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"(max - min) / step must be whole, got {n}")
        return self

    def values(self) -> list[float]:
        """Every allowed rating, in order."""
        n = round((self.max - self.min) / self.step)
        return [round(self.min + i * self.step, 6) for i in range(n + 1)]


class DataConfig(Section):
    """Where the ratings come from (shared by every stage)."""

    source: Source = "synthetic"
    #: What runs ingest, validate and preprocess: ``pandas`` (in this process) or ``spark`` (on
    #: the ``spark`` section's master; same outputs, as Parquet part folders).
    engine: Literal["pandas", "spark"] = "pandas"
    #: Folder of a MovieLens download or a ratings file for ``csv``; default ``data/raw/<source>/``.
    path: str | None = None
    #: Allow downloading a missing MovieLens archive (never happens for ``synthetic`` or ``csv``).
    download: bool = True
    #: Override the source's own rating scale (needed for ``csv`` files not on 1-5).
    rating_scale: RatingScale | None = None


class SparkConfig(Section):
    """Where the data stages run when ``data.engine`` is ``spark``."""

    #: Any master Spark accepts: ``local[N]`` (this machine, N cores), ``spark://host:port`` (a
    #: standalone cluster), ``yarn``, ``k8s://...``.
    master: str = Field("local[2]", min_length=1)
    #: The driver JVM's heap (a JVM size, e.g. ``4g``); with ``local[N]`` the executors live in it.
    driver_memory: str = Field("4g", pattern=r"^[0-9]+[kmgt]?$")
    #: Each executor's heap on a cluster.
    executor_memory: str = Field("2g", pattern=r"^[0-9]+[kmgt]?$")
    #: Partitions after a shuffle (a dedupe, a join): 2-4 per core of the cluster.
    shuffle_partitions: int = Field(4, ge=1)
    #: Spark's web UI, bound to 127.0.0.1:``ui_port`` (off: one listener fewer).
    ui: bool = False
    ui_port: int = Field(4050, ge=1, le=65_535)


class SyntheticConfig(Section):
    """The seeded MovieLens-like generator used by default (no network, same seed, same bytes)."""

    n_users: int = Field(1000, ge=2)
    n_items: int = Field(1700, ge=2)
    n_ratings: int = Field(100_000, ge=1)
    n_factors: int = Field(8, ge=1)
    n_genres: int = Field(18, ge=1, le=32)
    noise_std: float = Field(0.6, ge=0)
    #: Timestamps are spread between these two dates (UTC).
    start: str = "2015-01-01"
    end: str = "2020-12-31"


class CsvColumns(Section):
    """Names of the columns in the user's file, mapped to our canonical names."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    rating: str = "rating"
    #: ``null`` when the file has no timestamps (they are then all 0).
    timestamp: str | None = "timestamp"


class CsvConfig(Section):
    """How to read a ratings file the user brings (``data.source: csv``)."""

    test_path: str | None = None
    items_path: str | None = None
    sep: str = ","
    header: bool = True
    encoding: str = "utf-8"
    columns: CsvColumns = CsvColumns()
    id_type: Literal["int", "str"] = "int"


class IngestConfig(Section):
    """Ingest stage."""

    #: What to do with several ratings of one (user, item): ``error`` leaves them for ``validate``
    #: to reject; the others resolve them here and say how many they merged.
    duplicates: Literal["error", "keep_first", "keep_last", "mean"] = "error"
    #: Which ML-100K canonical split (``u1`` ... ``u5``, ``ua``, ``ub``) ``split: given`` uses.
    ml100k_fold: Literal["u1", "u2", "u3", "u4", "u5", "ua", "ub"] = "u1"


class ValidateConfig(Section):
    """Validate stage: the Great Expectations suite's thresholds."""

    min_ratings: int = Field(1000, ge=1)
    min_users: int = Field(10, ge=1)
    min_items: int = Field(10, ge=1)
    #: Ratings before this date are implausible (MovieLens began in 1995).
    timestamp_min: str = "1995-01-01"
    #: ``null``: no later than now (plus a day of clock skew).
    timestamp_max: str | None = None
    #: Allow timestamps of 0 (files with no timestamp column).
    allow_missing_timestamps: bool = False


class PreprocessConfig(Section):
    """Preprocess stage: ID encoding and splits."""

    split: Literal["random", "temporal", "leave_last_n", "given"] = "random"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    #: Carved from train for early stopping and tuning; never the test split.
    val_fraction: float = Field(0.1, ge=0, lt=1)
    #: For ``split: leave_last_n``: the last n ratings of each user go to test.
    n_last: int = Field(1, ge=1)


#: Knobs of how a family is trained (not constructor arguments): a family's section may set its
#: own, over the ``train`` section's.
TRAINING_KNOBS = frozenset({"learning_rate", "batch_size", "patience", "epochs"})


class FamilyHyper(Section):
    """Base of each family's section: its own knobs, plus optional training knobs of its own."""

    #: Adam's step size for this family; ``null``: ``train.learning_rate``. Families differ (an
    #: ensemble overfits at a step that suits a plain MF), so each may keep its tuned value.
    learning_rate: float | None = Field(None, gt=0)
    #: Batch size for this family; ``null``: ``train.batch_size``.
    batch_size: int | None = Field(None, ge=1)
    #: Early-stopping patience for this family; ``null``: ``train.patience``.
    patience: int | None = Field(None, ge=1)
    #: Most epochs for this family; ``null``: ``train.epochs``.
    epochs: int | None = Field(None, ge=1)


class MFHyper(FamilyHyper):
    """``mf``: the tutorial's model (embeddings and a dot product, no biases)."""

    embedding_dim: int = Field(32, ge=1)
    l2: float = Field(0.0, ge=0)


class BiasedMFHyper(FamilyHyper):
    """``biased_mf``: embeddings plus user/item biases and the global mean.

    Tuned on ML-100K's validation split (90/10 of ``u1.base``; ``u1.test`` never took part): at
    batch 4096 and Adam 1e-2 it reaches val RMSE 0.908 by epoch 7 with 64 dimensions,
    per-example l2 0.1 on the vectors, 0.01 on the biases and a small random start (0.01); one
    l2 for both stalls at 0.911 whatever the size (16 to 128) or step, and below 0.05 it
    overfits within 5 epochs.
    """

    embedding_dim: int = Field(64, ge=1)
    l2: float = Field(0.1, ge=0)
    #: L2 on the biases; ``null``: ``l2``. Biases need far less shrinking than the vectors.
    bias_l2: float | None = Field(0.01, ge=0)
    #: Standard deviation of the vectors' random start.
    init_stddev: float = Field(0.01, gt=0)


class NCFHyper(FamilyHyper):
    """``ncf``: NeuMF, a GMF path and an MLP path over separate embeddings."""

    embedding_dim: int = Field(32, ge=1)
    mlp_layers: list[int] = [64, 32, 16]
    dropout: float = Field(0.3, ge=0, lt=1)
    l2: float = Field(0.1, ge=0)


class HybridHyper(FamilyHyper):
    """``hybrid``: biased MF plus item (genres, year) and user (age, gender, job) features.

    Tuned like ``biased_mf`` (val RMSE 0.893, from 0.900 with one l2 of 0.014 for vectors and
    biases); its content tower wants far stronger L2 (0.009) than a first guess of 1e-5.
    """

    embedding_dim: int = Field(128, ge=1)
    l2: float = Field(0.1, ge=0)
    bias_l2: float | None = Field(0.01, ge=0)
    init_stddev: float = Field(0.05, gt=0)
    content_l2: float = Field(0.009, ge=0)
    learning_rate: float | None = Field(3e-3, gt=0)


class AutoRecHyper(FamilyHyper):
    """``autorec``: item-based AutoRec, an autoencoder over each item's vector of train ratings."""

    hidden_units: int = Field(100, ge=1)
    l2: float = Field(3e-5, ge=0)
    #: Share of an item's input ratings dropped at random while training (denoising).
    dropout: float = Field(0.03, ge=0, lt=1)
    learning_rate: float | None = Field(3e-3, gt=0)


class EnsembleHyper(FamilyHyper):
    """``ensemble``: the hybrid and the AutoRec (each with its own section's knobs), blended."""

    #: Weight of the hybrid's prediction; the AutoRec gets ``1 - blend``.
    blend: float = Field(0.5, ge=0, le=1)
    learning_rate: float | None = Field(3e-3, gt=0)
    #: Knobs of the members that differ inside the blend, over ``train.hybrid`` and
    #: ``train.autorec``: trained jointly, each member wants less shrinking than alone.
    hybrid: dict[str, Any] = {"l2": 0.025}
    autorec: dict[str, Any] = {}


class TwoTowerHyper(FamilyHyper):
    """``two_tower``: user and item towers trained with a softmax over items (ranking), plus a
    biased-MF rating head; early-stopped on the validation split's NDCG@10."""

    #: Size of the user and item tower vectors.
    embedding_dim: int = Field(64, ge=1)
    #: Per-example L2 on the towers' rows of each positive.
    l2: float = Field(0.1, ge=0)
    #: Weight of the rating head's MSE (with its L2) beside the retrieval loss.
    rating_loss_weight: float = Field(1.0, ge=0)
    #: Training ratings at or above this are the positives the softmax learns to rank first
    #: (keep it equal to ``evaluate.relevance_threshold``, which measures the same thing).
    relevance_threshold: float = 4.0
    #: Batches of 4096 at step 0.01 rank as well as 1024 at 0.003 (ML-100K u1, NDCG@10 0.4725
    #: against 0.4757, within one fold's noise) in a quarter of the steps, and the rating head
    #: converges in fewer epochs than at 0.006 (18 against 25).
    learning_rate: float | None = Field(1e-2, gt=0)
    batch_size: int | None = Field(4096, ge=1)
    #: A softmax converges later than an MSE: more patience and more epochs (on ML-100K the
    #: towers' best epochs were 19 to 29); a change counts only beyond each head's least change
    #: (``models.two_tower.NDCG_MIN_DELTA``, ``RMSE_MIN_DELTA``).
    patience: int | None = Field(8, ge=1)
    epochs: int | None = Field(45, ge=1)
    #: ``full``: each positive against the whole catalog (every step costs batch x items);
    #: ``in_batch``: against the batch's other positives, corrected for their popularity (log-Q),
    #: a step's cost independent of the catalog but a positive's growing with the batch;
    #: ``sampled``: against ``negatives`` items drawn by popularity once per batch (and the
    #: batch's positives while ``in_batch_negatives``), log-Q corrected, a positive's cost fixed;
    #: ``auto``: ``models.sizing.TWO_TOWER_AUTO_LARGE`` above
    #: ``models.sizing.TWO_TOWER_IN_BATCH_MIN_ITEMS`` items, else full.
    softmax: Literal["auto", "full", "in_batch", "sampled"] = "auto"
    #: ``softmax: sampled``: items each batch draws (with replacement) as shared negatives.
    negatives: int = Field(256, ge=1)
    #: ``softmax: sampled``: the batch's other positives are candidates too (a positive's cost
    #: then grows with the batch; on ML-100K it ranked no better).
    in_batch_negatives: bool = False
    #: The rating head's knobs over ``train.biased_mf``'s (e.g. ``{l2: 0.15}``).
    rating: dict[str, Any] = {}


class SearchConfig(Section):
    """``train.search``: one knob of the chosen family, picked on the validation part.

    The families' knobs were tuned once, on ML-100K; EASE picks its lambda on each dataset's own
    validation part (``evaluate.ease_lambdas``). The train stage does the same for the knob that
    moves a family most (:mod:`recommender.training.search`): it walks it from the section's
    value on a log scale while the validation metric improves, within a time budget.
    """

    #: The knob (a number in ``train.<family>``; a family without it trains once). ``l2`` moves
    #: two_tower's ranking most: on ML-100K u1-u3, validation NDCG@10 fell 7-8% at a third of
    #: the default 0.1 and 42% at three times, while 32 or 128 dimensions stayed within 3%.
    knob: str = "l2"
    #: Each trial multiplies (then, if up did not help, divides) the best value so far by this.
    step: float = Field(2.0, gt=1)
    #: Seconds the search may spend on trials after the fit with the section's own value; a
    #: trial that would overrun it (judged by the fits so far) does not start. 0 turns it off.
    budget_seconds: float = Field(120.0, ge=0)


class TrainConfig(Section):
    """Train stage: which model family, and how to fit it."""

    model: Family = "two_tower"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(4096, ge=1)
    #: Adam's step size, for the families whose section sets none of its own.
    learning_rate: float = Field(1e-2, gt=0)
    #: Early stopping: epochs without a better validation RMSE before stopping (best weights kept).
    patience: int = Field(3, ge=1)
    #: After early stopping has chosen the epoch count on the validation part, train once more
    #: on train + validation for that many epochs; the later stages use this model.
    refit: bool = True
    #: Where the refit starts: ``scratch`` trains a new model for the chosen epoch count;
    #: ``fitted`` continues the early-stopped model (its best weights and optimizer state) on
    #: train + validation for the share of the chosen epochs the validation part adds, times
    #: ``refit_epochs_factor``.
    refit_from: Literal["scratch", "fitted"] = "fitted"
    #: ``fitted``: each head goes on for its best epoch count x (validation rows / train rows) x
    #: this, at least one epoch. One pass of the validation ratings (factor 1) left them
    #: underused: on ML-100K's five folds NDCG@10 0.397 (EASE 0.398), 0.402 at 2.5, 0.401 at 4.
    refit_epochs_factor: float = Field(2.5, gt=0)
    #: Rows of one user kept together in a batch (each epoch permutes blocks of up to this many
    #: rows of a user instead of single rows): fewer distinct users a step, so fewer table rows
    #: for lazy Adam to move. ``auto``: 16 where a batch would otherwise hold mostly distinct
    #: users (more users than batch rows), else 1 (see ``training.loop.resolve_user_block``).
    user_block: int | str = "auto"
    #: ``lazy_adam`` moves only the table rows a batch used, so a step costs the batch, not the
    #: catalog; ``adam`` (Keras') updates every row of every table each step.
    optimizer: Literal["adam", "lazy_adam"] = "lazy_adam"
    #: ``none``: the training loop (:mod:`recommender.training.loop`) in one process.
    #: ``mirrored``: the same loop data-parallel over this machine's devices (one on a CPU).
    #: ``multi_worker``: over the workers ``TF_CONFIG`` names, one process each.
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    search: SearchConfig = SearchConfig()
    mf: MFHyper = MFHyper()
    biased_mf: BiasedMFHyper = BiasedMFHyper()
    ncf: NCFHyper = NCFHyper()
    hybrid: HybridHyper = HybridHyper()
    autorec: AutoRecHyper = AutoRecHyper()
    ensemble: EnsembleHyper = EnsembleHyper()
    two_tower: TwoTowerHyper = TwoTowerHyper()

    @field_validator("user_block", mode="before")
    @classmethod
    def _user_block_is_auto_or_positive(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"expected 'auto' or an integer >= 1, got {value!r}")

    @model_validator(mode="after")
    def _members_are_valid(self) -> TrainConfig:
        members: tuple[tuple[str, Literal["hybrid", "autorec", "biased_mf"]], ...] = (
            ("ensemble", "hybrid"),
            ("ensemble", "autorec"),
            ("two_tower", "biased_mf"),
        )
        for owner, family in members:
            try:
                self.member(family)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                key = "rating" if owner == "two_tower" else family
                message = f"{owner}.{key} overrides train.{family}: {problems}"
                raise ValueError(message) from None
        # A knob of another family is no mistake (the search skips a family without it, so
        # `-S train.model=ensemble` just works); a knob of none is a typo.
        known = sorted({k for family in FAMILIES for k in self.searchable_knobs(family)})
        if self.search.budget_seconds > 0 and self.search.knob not in known:
            raise ValueError(
                f"search.knob {self.search.knob!r} is no family's knob; expected one of "
                f"{', '.join(known)} (or search.budget_seconds: 0)"
            )
        return self

    def searchable_knobs(self, family: str | None = None) -> list[str]:
        """The numeric knobs of ``family`` (the chosen one by default) a search may walk."""
        section = getattr(self, family or self.model)
        return [
            name
            for name, value in section.model_dump().items()
            if name not in TRAINING_KNOBS - {"learning_rate"}
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ]

    def with_knob(self, name: str, value: float) -> TrainConfig:
        """This config with the chosen family's ``name`` set to ``value`` (validated)."""
        raw = self.model_dump()
        raw[self.model] = {**raw[self.model], name: value}
        return TrainConfig.model_validate(raw)

    def hyper(self) -> dict[str, Any]:
        """Constructor arguments of the chosen family (its section without ``learning_rate``)."""
        own = set(TRAINING_KNOBS)
        if self.model == "ensemble":  # its members: their own sections, then its overrides
            return {
                **self.ensemble.model_dump(exclude=own),
                "hybrid": self.member("hybrid").model_dump(exclude=own),
                "autorec": self.member("autorec").model_dump(exclude=own),
            }
        if self.model == "two_tower":  # its rating head: train.biased_mf, then its overrides
            return {
                **self.two_tower.model_dump(exclude=own),
                "rating": self.member("biased_mf").model_dump(exclude=own),
            }
        section: FamilyHyper = getattr(self, self.model)
        return section.model_dump(exclude=own)

    def member(self, family: Literal["hybrid", "autorec", "biased_mf"]) -> FamilyHyper:
        """A member's knobs: ``train.<family>`` with its owner's overrides over it (the
        ensemble's ``hybrid`` / ``autorec``; the two-tower's rating head, ``rating``)."""
        section = getattr(self, family)
        overrides = (
            self.two_tower.rating if family == "biased_mf" else getattr(self.ensemble, family)
        )
        return type(section).model_validate({**section.model_dump(), **overrides})

    @property
    def family_learning_rate(self) -> float:
        """The step size training uses: the chosen family's own, else ``learning_rate``."""
        own = getattr(self, self.model).learning_rate
        return self.learning_rate if own is None else own

    @property
    def family_batch_size(self) -> int:
        """The batch size training uses: the chosen family's own, else ``batch_size``."""
        own = getattr(self, self.model).batch_size
        return self.batch_size if own is None else own

    def with_epochs(self, epochs: int) -> TrainConfig:
        """This config training the chosen family for at most ``epochs`` (its own cap dropped)."""
        section = getattr(self, self.model).model_copy(update={"epochs": None})
        return self.model_copy(update={"epochs": epochs, self.model: section})

    @property
    def family_epochs(self) -> int:
        """Most epochs training runs: the chosen family's own cap, else ``epochs``."""
        own = getattr(self, self.model).epochs
        return self.epochs if own is None else own

    @property
    def family_patience(self) -> int:
        """Early stopping's patience: the chosen family's own, else ``patience``."""
        own = getattr(self, self.model).patience
        return self.patience if own is None else own


class EvaluateConfig(Section):
    """Evaluate stage: ranking cut-off, relevance, slices."""

    k: int = Field(10, ge=1)
    #: A test rating at or above this counts as relevant for the ranking metrics.
    relevance_threshold: float = 4.0
    #: Users are sliced by their number of training ratings: [0], [1, 5], [6, 20], [21, ...].
    activity_bins: list[int] = [1, 6, 21]
    #: The EASE ranking baseline's L2 strength is chosen among these on the validation split.
    ease_lambdas: list[float] = Field([50.0, 100.0, 200.0, 300.0, 500.0, 1000.0], min_length=1)
    #: Larger catalogs skip EASE (its item x item matrix: n^2 floats in memory, n^3 to invert).
    ease_max_items: int = Field(10_000, ge=1)


class TuneConfig(Section):
    """``make tune``: a search on the validation split (see ``recommender.training.tuning``)."""

    family: Family = "biased_mf"
    n_trials: int = Field(20, ge=1)
    #: Epoch cap per trial (each stops early as in ``train``); ``null``: ``train.epochs``.
    epochs: int | None = Field(None, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    #: Stop a trial early when its val RMSE trails the median of earlier trials at that epoch.
    prune: bool = True


class TrackingConfig(Section):
    """MLflow names. The tracking URI itself comes from ``MLFLOW_TRACKING_URI`` (default: the
    project's ``mlflow.db``)."""

    experiment: str = "recommender"
    registered_model: str = "recommender"


class RegisterConfig(Section):
    """Register stage: the gate a candidate must pass to become the ``champion``."""

    #: The metric that decides: ``auto`` is NDCG@k (``evaluate.k``) for families trained to rank
    #: and RMSE for rating-only ones; the other metric is the guard.
    primary: Literal["auto", "rmse", "ndcg"] = "auto"
    #: Resamples of the paired bootstrap over users.
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)
    #: Two-sided coverage of the intervals of ``metric(candidate) - metric(champion)``.
    confidence: float = Field(0.95, gt=0.5, lt=1)
    #: The primary metric's whole interval must lie beyond this: the smallest gain worth a
    #: promotion (in RMSE or in NDCG).
    min_delta: float = Field(0.001, ge=0)
    #: The guard fails (no promotion) when the whole interval of the other metric shows the
    #: candidate worse than the champion by more than this.
    guard_delta: float = Field(0.01, ge=0)


class ServeConfig(Section):
    """The BentoML service (``package`` stage): request limits and the default port."""

    #: Largest ``k`` a ``recommend`` or ``similar_items`` request may ask for.
    max_k: int = Field(100, ge=1, le=10_000)
    #: Most (user, item) pairs one ``predict`` request may carry; more is a 400, not a slow reply.
    max_pairs: int = Field(1000, ge=1, le=100_000)
    #: Port ``make serve`` listens on (127.0.0.1 only).
    port: int = Field(3000, ge=1, le=65_535)
    #: BentoML worker processes (each loads the model; about one per core).
    workers: int = Field(1, ge=1, le=64)
    #: Open HTTP connections one worker keeps; the next ones get a 503 and are closed (clamped to
    #: what the worker's file-descriptor limit allows).
    max_connections: int = Field(4000, ge=1, le=1_000_000)
    #: Catalogs of up to this many items rank exactly (every item scored); larger ones through
    #: an approximate index (FAISS IVF) the package stage builds (``recommender.scoring.ann``).
    exact_max_items: int = Field(50_000, ge=0)
    #: The index probes the fewest lists whose top-10 matches exact ranking on a sample of users
    #: at least this well (measured at build); if none does, the service ranks exactly.
    ann_min_recall: float = Field(0.99, gt=0, le=1)
    #: Record every predict / recommend / similar_items / feedback call as one JSON line
    #: (``bentoml.monitor``'s log-file exporter) under ``log_dir/<endpoint>/data/``.
    inference_log: bool = True
    #: Where the service writes its inference log (relative to where ``bentoml serve`` runs) and
    #: where ``make monitor`` and the feedback stage read it.
    log_dir: str = Field("logs/inference", min_length=1)
    #: Where the records go: ``file`` (``log_dir``, what ``make monitor`` and the feedback stage
    #: read) or ``otlp`` (the same records to an OpenTelemetry collector at ``otlp_endpoint``,
    #: none to files).
    inference_log_exporter: Literal["file", "otlp"] = "file"
    #: The collector's OTLP/HTTP logs endpoint, the full URL (used only with ``otlp``).
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/logs"

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                "expected the http(s) URL of the collector's OTLP/HTTP logs endpoint, path "
                "included (e.g. http://127.0.0.1:4318/v1/logs)"
            )
        return value


class MonitorConfig(Section):
    """``make monitor``: the window of inference log it reads and the retrain thresholds."""

    #: The window: the last ``window_hours`` before ``until`` (``null``: all of the log).
    window_hours: float | None = Field(168.0, gt=0)
    #: The window's end, an ISO date or time in UTC (``null``: now).
    until: str | None = None
    #: Cut-off of the served lists' hit rate@K and NDCG@K.
    k: int = Field(10, ge=1)
    #: Feedback counts for a served list when it follows it (same user) within this many hours.
    horizon_hours: float = Field(24.0, gt=0)
    #: Retrain when a population stability index (ratings, item or user popularity) passes this.
    psi_threshold: float = Field(0.2, gt=0)
    #: Retrain when the window holds at least this many feedback ratings.
    min_feedback: int = Field(1000, ge=1)
    #: Retrain when online NDCG@K is below the champion's offline NDCG@K by more than this
    #: fraction of it (judged only with at least ``min_served`` followed lists).
    online_margin: float = Field(0.5, gt=0, le=1)
    min_served: int = Field(100, ge=1)
    #: Drift (PSI) is judged only with at least this many feedback ratings in the window: on
    #: fewer, a PSI over ~11 bins is mostly sampling noise (about 10 / n on unchanged traffic).
    min_drift_rows: int = Field(200, ge=1)


class Params(Section):
    """All of ``params.yaml``."""

    seed: int = 42
    data: DataConfig = DataConfig()
    spark: SparkConfig = SparkConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    csv: CsvConfig = CsvConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()
    # ``register`` would shadow ABCMeta.register on the model class, hence the alias.
    register_: RegisterConfig = Field(RegisterConfig(), alias="register")
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping, turning pydantic's report into one readable error."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                problems.append(f"  {key}: unknown key (misspelled?)")
            else:
                problems.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(problems)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; a missing file is an error (run from the project root).

    Keys left out of the file take the defaults above, which mirror ``params.yaml``'s own values
    (a test keeps the two equal).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file (run from the project root, or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))
