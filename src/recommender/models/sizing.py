"""What a family costs in memory and time, sized without TensorFlow: the train stage's guard.

The two-tower and AutoRec limits are defined here, beside the estimate that sizes them, and the
models import them (:mod:`.two_tower`, :mod:`.autorec`): the train stage checks its estimate
(:func:`check_train`) before it imports TensorFlow, so this module imports nothing heavy, and
importing it does not import the families (:mod:`recommender.models` loads them on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recommender.core.memory import Available, Estimate, Part, check, tensorflow_part

if TYPE_CHECKING:
    from recommender.core.config import TrainConfig

#: Bytes per trainable parameter while training: the weight, its gradient and Adam's two slots,
#: float32 each.
BYTES_PER_PARAMETER = 4 * 4
#: Bytes per rating the training input pipeline holds in TensorFlow: user and item (int32),
#: rating (float32) and its slot in the epoch's shuffled order (int64).
INPUT_BYTES_PER_RATING = 4 + 4 + 4 + 8
#: Bytes an AutoRec training step holds per stored rating it reads: position, user index and
#: value of each (int32/float32), the COO indices (2 x int64) and the CSR copy of the batch's
#: rows and its transpose for the gradient, rounded up.
AUTOREC_STEP_BYTES_PER_RATING = 64
#: Most stored ratings one AutoRec call encodes when it computes every item's code (export,
#: ranking, an unknown item's code): items go in blocks of about this many ratings, so the
#: transient sparse matrix stays near 130 MB whatever the data set's size. Defined here, where
#: it is sized without TensorFlow; ``recommender.models.autorec`` uses it.
AUTOREC_CODE_BLOCK_RATINGS = 2_000_000
#: Most ratings an AutoRec epoch may read (steps x ratings read per step) before the train stage
#: refuses it: about an hour an epoch on 2 cores (measured ~0.36 us per rating read, with its
#: gradient, at 100 hidden units on a 1M-rating set). Not memory: AutoRec's one cost that grows
#: faster than the data (ratings / batch x ratings per step), refused up front with the rest.
AUTOREC_MAX_EPOCH_READS = 10_000_000_000
#: Copies of the ``batch x (n_items + 1)`` logits a two-tower step holds: the logits, the
#: positives mask, the softmax and the gradient.
TWO_TOWER_LOGIT_COPIES = 4
#: ``train.two_tower.softmax: auto`` leaves the full softmax above this many items: a full-softmax
#: epoch costs positives x items x dims (ML-1M's 3.7k items: ~0.8 TFLOP an epoch, minutes on 2
#: cores; ML-10M's 10.7k: tens of minutes). ML-100K's 1.7k items (and the synthetic default's) stay
#: on the full softmax, which ranks better there (README). See :func:`two_tower_softmax`.
TWO_TOWER_IN_BATCH_MIN_ITEMS = 2_000
#: What ``auto`` trains with above :data:`TWO_TOWER_IN_BATCH_MIN_ITEMS` items: the sampled
#: softmax, whose cost per positive is fixed (``negatives``) and which ranks like the full one
#: (ML-100K u1, forced: NDCG@10 0.475 with 512 negatives, 0.476 with 1024; full 0.475, in-batch
#: 0.456).
TWO_TOWER_AUTO_LARGE = "sampled"
#: ``train.two_tower.negatives``' default: items a ``softmax: sampled`` batch draws by popularity.
TWO_TOWER_NEGATIVES = 256
#: Largest ``(users + 1) x (items + 1)`` positives mask the two-tower keeps as a dense boolean
#: table; beyond it, at most this many of a user's positives are masked from their softmaxes.
TWO_TOWER_DENSE_MASK_MAX_CELLS = 64_000_000
TWO_TOWER_MAX_MASKED_POSITIVES = 1024
#: The sampled softmax keeps users' positives as one bit per ``(user, item)`` cell up to this
#: many cells (2 GB of bits; ML-25M's shape: 9.6 G cells, 1.2 GB); beyond, as sorted keys.
TWO_TOWER_MASK_MAX_BITS = 16_000_000_000

#: What a train estimate suggests, by what dominates it.
SCALABLE_FAMILIES = "biased_mf or hybrid"


def two_tower_softmax(softmax: str, n_items: int) -> str:
    """The softmax a two-tower with ``train.two_tower.softmax: <softmax>`` trains with:
    ``full``, ``in_batch`` or ``sampled`` (``auto`` resolved by the catalog's size)."""
    if softmax != "auto":
        return softmax
    return TWO_TOWER_AUTO_LARGE if n_items > TWO_TOWER_IN_BATCH_MIN_ITEMS else "full"


def autorec_ratings_per_step(item_idx: Any, batch_size: int) -> int:
    """Most stored ratings one AutoRec training step reads: those of the ``batch_size``
    most-rated items (a step encodes each distinct item of its batch from all its ratings)."""
    counts = np.bincount(np.asarray(item_idx, dtype=np.int64).reshape(-1))
    if counts.size <= batch_size:
        return int(counts.sum())
    return int(np.partition(counts, counts.size - batch_size)[-batch_size:].sum())


def _tables(name: str, rows: int, width: int) -> Part:
    return Part(
        f"{name} tables {rows:,} x {width} x 16 B (weight, gradient, 2 Adam slots)",
        rows * width * BYTES_PER_PARAMETER,
    )


def _family_parts(
    family: str, hyper: dict[str, Any], n_users: int, n_items: int, n_item_features: int
) -> list[Part]:
    """The trainable tables of ``family`` (the big ones: rows grow with users and items)."""
    rows = n_users + n_items + 2
    if family == "mf":
        return [_tables("mf", rows, hyper["embedding_dim"])]
    if family == "biased_mf":
        return [_tables("biased_mf", rows, hyper["embedding_dim"] + 1)]
    if family == "ncf":  # a GMF and an MLP embedding per side
        return [_tables("ncf", rows, 2 * hyper["embedding_dim"])]
    if family == "hybrid":
        d = hyper["embedding_dim"]
        return [
            _tables("hybrid", rows, d + 1),
            Part(
                f"hybrid item features {n_items + 1:,} x {n_item_features} x 4 B",
                (n_items + 1) * n_item_features * 4,
            ),
        ]
    if family == "autorec":  # encoder V, decoder W and its bias: all over users
        return [_tables("autorec", n_users + 1, 2 * hyper["hidden_units"] + 1)]
    if family == "ensemble":
        return _family_parts("hybrid", hyper["hybrid"], n_users, n_items, n_item_features) + (
            _family_parts("autorec", hyper["autorec"], n_users, n_items, n_item_features)
        )
    if family == "two_tower":  # the towers and the item prior, plus a biased-MF rating head
        return [
            _tables("two_tower", rows, hyper["embedding_dim"] + 1),
            _tables("two_tower rating head", rows, hyper["rating"]["embedding_dim"] + 1),
        ]
    return []


def train_estimate(processed: Any, cfg: TrainConfig) -> Estimate:
    """The train stage's peak: the model's tables, the train arrays and a step's working set.

    - tables: each trainable table's rows x width x :data:`BYTES_PER_PARAMETER`;
    - train arrays: the refit's train + validation ratings x (:data:`INPUT_BYTES_PER_RATING` in
      TensorFlow + the bytes per row of the pandas copy the refit makes);
    - ``autorec`` / ``ensemble``: its stored ratings (12 B each) and a step's sparse rows, at
      most :func:`autorec_ratings_per_step` x :data:`AUTOREC_STEP_BYTES_PER_RATING`;
    - ``two_tower``: a step's logits, :data:`TWO_TOWER_LOGIT_COPIES` copies (batch x (n_items +
      1) with the full softmax, batch x batch in-batch, batch x (batch + negatives) sampled),
      and, but in-batch, its users' positives table;
    - TensorFlow itself (:data:`TENSORFLOW_RUNTIME_BYTES`), unless already imported.

    ``processed`` is the preprocess stage's output (:class:`~recommender.dataset.processed.
    Processed`).
    """
    family, hyper, batch = cfg.model, cfg.hyper(), cfg.family_batch_size
    n_users, n_items = len(processed.user_vocab) - 1, len(processed.item_vocab) - 1
    train, val = processed.train, processed.val
    n = len(train) + len(val)
    row_bytes = int(train.memory_usage(index=False, deep=False).sum()) // max(len(train), 1)
    parts = _family_parts(family, hyper, n_users, n_items, processed.item_features.shape[1])
    parts.append(
        Part(
            f"train arrays {n:,} ratings x {INPUT_BYTES_PER_RATING + row_bytes} B",
            n * (INPUT_BYTES_PER_RATING + row_bytes),
        )
    )
    advice: list[str] = []
    if family in ("autorec", "ensemble"):
        per_step = min(max(_autorec_step(processed, batch), AUTOREC_CODE_BLOCK_RATINGS), n)
        parts += [
            Part(f"autorec stored ratings {n:,} x 12 B", n * 12),
            Part(
                f"autorec step: up to {per_step:,} ratings (of its batch's {batch:,} items) "
                f"x {AUTOREC_STEP_BYTES_PER_RATING} B",
                per_step * AUTOREC_STEP_BYTES_PER_RATING,
            ),
        ]
        advice.append(
            f"a smaller train.{family}.batch_size (a step reads the ratings of its batch's items)"
        )
    if family == "two_tower":
        step, what = _two_tower_step(processed, hyper, batch, n_users, n_items)
        parts += step
        advice.append(what)
    parts.append(tensorflow_part())
    advice.append(
        f"a family that scales: {SCALABLE_FAMILIES} (tables of users + items rows, "
        "a step of batch-size rows)"
    )
    return Estimate("train", tuple(parts), tuple(advice))


def _two_tower_step(
    processed: Any, hyper: dict[str, Any], batch: int, n_users: int, n_items: int
) -> tuple[list[Part], str]:
    """A two-tower step's logits (full softmax: batch x items; in-batch: batch x batch; sampled:
    batch x (batch + negatives)) and, but in-batch, its table of users' positives (dense
    booleans up to :data:`TWO_TOWER_DENSE_MASK_MAX_CELLS`; beyond, for the full softmax, each
    user's positives padded to the most any user has, at most
    :data:`TWO_TOWER_MAX_MASKED_POSITIVES`; for the sampled softmax a bit per cell up to
    :data:`TWO_TOWER_MASK_MAX_BITS`, beyond every positive's int64 key), and what to change
    when they do not fit."""
    kind = two_tower_softmax(hyper.get("softmax", "auto"), n_items)
    copies = TWO_TOWER_LOGIT_COPIES
    if kind == "in_batch":
        logits = Part(
            f"two_tower step: {batch:,} x {batch:,} in-batch logits x {copies} copies x 4 B",
            batch * batch * copies * 4,
        )
        return [logits], "a smaller train.two_tower.batch_size (its softmax is batch x batch)"
    cells = (n_users + 1) * (n_items + 1)
    dense = cells <= TWO_TOWER_DENSE_MASK_MAX_CELLS
    if dense:
        mask = Part(f"two_tower positives mask {n_users + 1:,} x {n_items + 1:,} x 1 B", cells)
    else:
        train = processed.train
        positive = train["rating"].to_numpy() >= hyper["relevance_threshold"]
    if kind == "sampled":
        negatives = int(hyper.get("negatives", TWO_TOWER_NEGATIVES))
        width = (batch if hyper.get("in_batch_negatives", False) else 1) + negatives
        logits = Part(
            f"two_tower step: {batch:,} x {width:,} sampled logits x {copies} copies x 4 B",
            batch * width * copies * 4,
        )
        if cells <= TWO_TOWER_MASK_MAX_BITS:
            row_bytes = -(-(n_items + 1) // 8)
            mask = Part(
                f"two_tower positives bits {n_users + 1:,} x {row_bytes:,} B",
                (n_users + 1) * row_bytes,
            )
        else:
            n = int(positive.sum())
            mask = Part(f"two_tower positives {n:,} keys x 8 B", n * 8)
        return [logits, mask], (
            "a smaller train.two_tower.batch_size or train.two_tower.negatives (its softmax is "
            "batch x (batch + negatives))"
        )
    logits = Part(
        f"two_tower step: {batch:,} x {n_items + 1:,} item logits x {copies} copies x 4 B",
        batch * (n_items + 1) * copies * 4,
    )
    if not dense:
        most = np.bincount(train["user_idx"].to_numpy()[positive], minlength=1).max(initial=1)
        width = int(min(max(most, 1), TWO_TOWER_MAX_MASKED_POSITIVES))
        mask = Part(
            f"two_tower positives {n_users + 1:,} x {width:,} x 4 B", (n_users + 1) * width * 4
        )
    return [logits, mask], (
        "train.two_tower.softmax: in_batch (batch x batch logits) or sampled (batch x "
        "(batch + negatives) logits), or a smaller "
        "train.two_tower.batch_size (its full softmax is batch x items)"
    )


def _autorec_step(processed: Any, batch: int) -> int:
    """Most ratings an AutoRec step reads on the refit's data (train + validation)."""
    items = np.concatenate(
        [processed.train["item_idx"].to_numpy(), processed.val["item_idx"].to_numpy()]
    )
    return autorec_ratings_per_step(items[items > 0], batch)


def check_train(
    processed: Any,
    cfg: TrainConfig,
    available: Available | None = None,
    max_epoch_reads: int = AUTOREC_MAX_EPOCH_READS,
) -> None:
    """The train stage's guard: :func:`train_estimate` must fit in memory, and an AutoRec
    (alone or in the ensemble) epoch must read at most ``max_epoch_reads`` ratings.

    Raises:
        MemoryLimitExceeded: The estimate does not fit (see :func:`check`).
        ConfigError: AutoRec's epoch would be too long; the message names the sizes, the batch
            size that would fit and the families that scale.
    """
    check(train_estimate(processed, cfg), available)
    if cfg.model not in ("autorec", "ensemble"):
        return
    from recommender.core.errors import ConfigError

    n = len(processed.train) + len(processed.val)
    batch = cfg.family_batch_size
    steps = -(-n // batch)
    per_step = _autorec_step(processed, batch)
    if steps * per_step <= max_epoch_reads:
        return
    fits = batch
    while fits < n and -(-n // fits) * _autorec_step(processed, fits) > max_epoch_reads:
        fits *= 2
    fix = f"raise train.{cfg.model}.batch_size to {fits:,} or more, or use" if fits < n else "use"
    hour = (
        " (about an hour an epoch on 2 cores)" if max_epoch_reads == AUTOREC_MAX_EPOCH_READS else ""
    )
    raise ConfigError(
        f"{cfg.model}: AutoRec reads all the ratings of its batch's items at every step, so "
        f"with {n:,} ratings ({len(processed.user_vocab) - 1:,} users x "
        f"{len(processed.item_vocab) - 1:,} items) and batch_size {batch:,} an epoch reads "
        f"{steps:,} steps x up to {per_step:,} = {steps * per_step:,} ratings, more than "
        f"the {max_epoch_reads:,} it is built for{hour}: "
        f"{fix} {SCALABLE_FAMILIES}, whose epochs read each rating once"
    )
