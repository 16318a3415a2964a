"""What every family shares: table sizes, the rating scale, clipping, the L2 penalty's forms,
and the lookups that read row 0 (an unknown id) as the average known row."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import keras
import numpy as np
from keras import ops

from recommender.core.errors import ConfigError
from recommender.scoring.factors import Factors

RegForm = Literal["per_example", "table", "none"]
REG_FORMS = ("per_example", "table", "none")
#: Registers a family with Keras under the ``recommender`` package (``safe_mode`` loading).
register = keras.saving.register_keras_serializable(package="recommender")


def as_index(x: Any) -> Any:
    """Any index input (``(batch,)`` or ``(batch, 1)``, any int dtype) as int32 ``(batch,)``."""
    return ops.reshape(ops.cast(x, "int32"), (-1,))


@register
class RowEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` whose lookup gathers the rows straight from its variable.

    Keras' own lookup (``ops.take(self.embeddings, ...)``) reads the whole table first, and once
    an optimizer has updated rows in place TensorFlow copies a variable on every such read, so a
    training step cost the table, not the batch: one 160k x 64 table's lookup and lazy-Adam
    update took 35 ms against 3.3 ms this way, 119 ms against 3.4 ms at 640k rows. ``tf.gather``
    on the variable is a sparse read (``ResourceGather``); its gradient is the same
    ``IndexedSlices``.
    """

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        if self.quantization_mode or self.lora_enabled:  # Keras' paths for what it adds
            return super().call(inputs)
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        return ops.cast(tf.gather(self.embeddings.value, inputs), self.compute_dtype)


def known_mask(idx: Any) -> Any:
    """1.0 for a known index, 0.0 for the OOV row, shaped ``(batch, 1)`` to scale rows."""
    return ops.expand_dims(ops.cast(ops.not_equal(idx, 0), "float32"), -1)


def lookup(table: keras.layers.Embedding, idx: Any, training: bool) -> Any:
    """Rows of ``table``; row 0 (unknown) reads as the mean of the known rows at inference.

    Row 0 never occurs in training, so its stored values are untrained noise. The mean row makes
    an unknown item "the average item" (and an unknown user the average user): for a linear
    model, exactly the average prediction over known items. While training, row 0 is zeroed
    instead: taking the mean would give every row of the table a (zero) dense gradient.
    """
    rows = table(idx)
    known = known_mask(idx)
    if training:
        return rows * known
    mean_row = ops.mean(table.embeddings[1:], axis=0)
    return rows * known + (1.0 - known) * mean_row


def table_with_mean_oov(table: keras.layers.Embedding) -> np.ndarray:
    """A table as NumPy with row 0 replaced as :func:`_lookup` does at inference."""
    values = ops.convert_to_numpy(table.embeddings).copy()
    values[0] = values[1:].mean(axis=0)
    return values


class RatingModel(keras.Model):
    """Shared plumbing: table sizes, rating scale, clipping and the L2 penalty's two forms.

    Args:
        n_users: Known users; the user tables get ``n_users + 1`` rows (row 0 = unknown).
        n_items: Known items; likewise.
        min_rating: Lower end of the rating scale (inference clips to it).
        max_rating: Upper end of the rating scale.
        l2: L2 strength.
        reg_form: ``"per_example"`` adds ``l2 * mean over the batch of the squared norms of the
            looked-up rows`` to the loss: each row is shrunk in proportion to how often it is
            seen, as in Funk-SVD / Surprise's SVD, which suits MF much better than
            ``"table"`` (Keras' ``embeddings_regularizer``: every row of the whole table is
            shrunk at every step, so rare users' and items' rows collapse to zero).
            ``"none"`` disables it. Not a ``params.yaml`` knob: each family uses the form that
            suits it (per-example for the factor models, the paper's whole-table form for
            AutoRec); tests compare the forms.
    """

    #: ``train.model``'s name for the family (each subclass sets it).
    family: ClassVar[str] = ""
    #: The constructor takes the item/user feature tables (``item_features``, ...).
    needs_features: ClassVar[bool] = False
    #: The constructor takes the train ratings (``train_ratings``).
    needs_ratings: ClassVar[bool] = False
    #: Trained to rank (a retrieval loss): early stopping and tuning watch the validation split's
    #: NDCG@10, the register gate's primary metric is NDCG, and ranking uses
    #: :meth:`retrieval_factors`.
    ranking_trained: ClassVar[bool] = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        min_rating: float,
        max_rating: float,
        l2: float,
        reg_form: RegForm = "per_example",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if n_users < 1 or n_items < 1:
            raise ConfigError(f"n_users and n_items must be positive, got {n_users}, {n_items}")
        if reg_form not in REG_FORMS:
            raise ConfigError(f"reg_form must be one of {REG_FORMS}, got {reg_form!r}")
        if not min_rating < max_rating:
            raise ConfigError(f"min_rating ({min_rating}) must be below max_rating ({max_rating})")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.min_rating = float(min_rating)
        self.max_rating = float(max_rating)
        self.l2 = float(l2)
        self.reg_form = reg_form

    def _embedding(
        self,
        rows: int,
        dim: int,
        name: str,
        stddev: float | None = 0.05,
        l2: float | None = None,
    ) -> keras.layers.Layer:
        """An ``rows x dim`` table; ``stddev=None`` starts it at zero (biases). ``l2`` overrides
        the model's strength for this table (``"table"`` form only)."""
        strength = self.l2 if l2 is None else l2
        table_reg = (
            keras.regularizers.L2(strength) if self.reg_form == "table" and strength else None
        )
        init = "zeros" if stddev is None else keras.initializers.RandomNormal(stddev=stddev)
        return RowEmbedding(
            rows,
            dim,
            embeddings_initializer=init,
            embeddings_regularizer=table_reg,
            name=name,
        )

    def _penalize(self, *rows: Any, l2: float | None = None) -> None:
        """Per-example L2 on looked-up rows (only while training, only in that form), with the
        model's strength or ``l2``."""
        strength = self.l2 if l2 is None else l2
        if self.reg_form != "per_example" or not strength:
            return
        total = sum(ops.sum(ops.square(r), axis=-1) for r in rows)
        self.add_loss(strength * ops.mean(total))

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        """Unclipped predictions ``(batch,)``; each family implements this."""
        raise NotImplementedError

    def factors(self) -> Factors | None:
        """The trained model as NumPy :class:`Factors` (ranking without TensorFlow), or None for
        a family that is not a dot product (``ncf``)."""
        return None

    def retrieval_factors(self) -> Factors | None:
        """What ranking scores with, when it is not the rating model (:attr:`ranking_trained`
        families); None: rank by the predicted rating (:meth:`factors`)."""
        return None

    def item_vectors(self) -> np.ndarray:
        """One vector per item index (row 0 = unknown), compared by ``similar_items``."""
        factors = self.factors()
        if factors is None:
            raise NotImplementedError(f"{type(self).__name__} has no item vectors")
        return factors.item_vectors

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        raw = self.score(inputs, training=bool(training))
        if training:
            return raw
        return ops.clip(raw, self.min_rating, self.max_rating)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "min_rating": self.min_rating,
            "max_rating": self.max_rating,
            "l2": self.l2,
            "reg_form": self.reg_form,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RatingModel:
        return cls(**config)


#: Constructor arguments that come from the data, not from ``params.yaml``.
DATA_ARGS = frozenset(
    {
        "n_users",
        "n_items",
        "min_rating",
        "max_rating",
        "global_mean",
        "item_features",
        "user_features",
        "n_item_features",
        "user_cardinalities",
        "train_ratings",
        "n_train_ratings",
    }
)


def member_knobs(cls: type[RatingModel], given: dict[str, Any], owner: str) -> dict[str, Any]:
    """A member model's knobs (its ``train.<family>`` section with its owner's overrides over
    it), checked against what ``cls``'s constructor takes; ``owner`` names it in the error."""
    allowed = constructor_args(cls) - DATA_ARGS
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"{owner} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    return {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}


def constructor_args(cls: type) -> set[str]:
    """Named constructor arguments of ``cls`` and its bases up to :class:`RatingModel`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not issubclass(klass, RatingModel):
            break
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}
