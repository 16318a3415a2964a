"""``ensemble``: the hybrid and the item AutoRec trained jointly on a blend of their ratings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recommender.core.errors import ConfigError
from recommender.models.autorec import ItemAutoRec
from recommender.models.base import RatingModel, member_knobs, register
from recommender.models.hybrid import HybridRecommender
from recommender.scoring.factors import Factors


@register
class HybridAutoRecEnsemble(RatingModel):
    """The hybrid and the item AutoRec in one model: ``r = a * hybrid + (1 - a) * autorec``.

    The best configuration the project offers (``train.model: ensemble``). The two members see
    the data differently (free ID vectors plus content features, against item codes computed from
    the rating matrix), so their errors are partly independent and their blend beats either. Both
    are trained together, on the blend's loss, with one optimizer and early stopping on the
    blend's validation RMSE; each keeps its own regularization (``train.hybrid`` and
    ``train.autorec`` give their knobs). The blend is a factor model again (vectors side by side,
    biases blended), so it exports :class:`Factors` like its members.

    Example:
        >>> model = build_model("ensemble", 943, 1682, RatingScale(), global_mean=3.53,
        ...     item_features=items, user_features=users, user_cardinalities=(8, 3, 22),
        ...     train_ratings=(user_idx, item_idx, rating))
    """

    family = "ensemble"
    needs_features = True
    needs_ratings = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        global_mean: float,
        blend: float,
        hybrid: dict[str, Any],
        autorec: dict[str, Any],
        item_features: np.ndarray | None = None,
        user_features: np.ndarray | None = None,
        n_item_features: int | None = None,
        user_cardinalities: Sequence[int] | None = None,
        train_ratings: Any = None,
        n_train_ratings: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("l2", 0.0)  # the members regularize themselves
        super().__init__(n_users, n_items, **kwargs)
        if not 0 <= blend <= 1:
            raise ConfigError(f"blend must be in [0, 1], got {blend}")
        self.blend = float(blend)
        self.global_mean = float(global_mean)
        self.hybrid_hyper = member_knobs(HybridRecommender, hybrid, "ensemble member 'hybrid'")
        self.autorec_hyper = member_knobs(ItemAutoRec, autorec, "ensemble member 'autorec'")
        scale: dict[str, Any] = {"min_rating": self.min_rating, "max_rating": self.max_rating}
        self.hybrid = HybridRecommender(
            n_users,
            n_items,
            global_mean=global_mean,
            item_features=item_features,
            user_features=user_features,
            n_item_features=n_item_features,
            user_cardinalities=user_cardinalities,
            name="hybrid",
            **scale,
            **self.hybrid_hyper,
        )
        self.autorec = ItemAutoRec(
            n_users,
            n_items,
            global_mean=global_mean,
            train_ratings=train_ratings,
            n_train_ratings=n_train_ratings,
            name="autorec",
            **scale,
            **self.autorec_hyper,
        )

    def build(self, input_shape: Any = None) -> None:
        self.hybrid.build()
        self.autorec.build()

    def score(self, inputs: dict[str, Any], training: bool = False) -> Any:
        h = self.hybrid.score(inputs, training)
        a = self.autorec.score(inputs, training)
        return self.blend * h + (1.0 - self.blend) * a

    def factors(self) -> Factors:
        """Both members' factors side by side: ``a*h + (1-a)*r`` as one dot product."""
        hy, ar = self.hybrid.factors(), self.autorec.factors()
        a, b = self.blend, 1.0 - self.blend
        return Factors(
            user_vectors=np.concatenate([a * hy.user_vectors, b * ar.user_vectors], axis=1),
            item_vectors=np.concatenate([hy.item_vectors, ar.item_vectors], axis=1),
            user_bias=a * hy.user_bias + b * ar.user_bias,
            item_bias=a * hy.item_bias + b * ar.item_bias,
            global_mean=a * hy.global_mean + b * ar.global_mean,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "global_mean": self.global_mean,
            "blend": self.blend,
            "hybrid": dict(self.hybrid_hyper),
            "autorec": dict(self.autorec_hyper),
            "n_item_features": self.hybrid.n_item_features,
            "user_cardinalities": list(self.hybrid.user_cardinalities),
            "n_train_ratings": self.autorec.n_train_ratings,
        }
