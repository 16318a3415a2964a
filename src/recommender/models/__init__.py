"""Keras 3 recommender models, one module per family.

Every model takes a dict of index tensors ``{"user": int32 (batch,), "item": int32 (batch,)}``
(encoded by the preprocess vocabulary; index 0 is the out-of-vocabulary row, known ids are
``1..n``) and returns predicted ratings of shape ``(batch,)``. At inference predictions are
clipped to the rating scale; during training they are not, so the gradient still flows for
predictions beyond the scale. Ranking uses the unclipped :meth:`RatingModel.score` (or the
exported :class:`~recommender.scoring.factors.Factors`): clipping would tie the best items.

Every class is registered as Keras-serializable, so ``model.save("m.keras")`` reloads with
``keras.saving.load_model("m.keras", safe_mode=True)`` (no pickled code) and predicts identically.

Families (``train.model``; their knobs come from ``params.yaml`` through
:func:`~recommender.models.factory.build_model`):

- ``mf``: :class:`MatrixFactorization` (:mod:`.mf`), the tutorial's plain dot product.
- ``biased_mf``: :class:`BiasedMF` (:mod:`.biased_mf`): dot product plus biases and a mean.
- ``ncf``: :class:`NeuMF` (:mod:`.ncf`), neural collaborative filtering (GMF + MLP paths).
- ``hybrid``: :class:`HybridRecommender` (:mod:`.hybrid`), biased MF plus a content tower.
- ``autorec``: :class:`ItemAutoRec` (:mod:`.autorec`), an autoencoder over item rating rows.
- ``ensemble``: :class:`HybridAutoRecEnsemble` (:mod:`.ensemble`), the two above blended.
- ``two_tower`` (the default): :class:`TwoTower` (:mod:`.two_tower`), user and item towers
  trained to rank with a softmax over items, plus a biased-MF rating head.

:mod:`.inputs` holds the ``tf.data`` input pipeline every family trains on; :mod:`.sizing` what
each family costs in memory, without TensorFlow.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ returns; also how the dvc.yaml deps test sees them
    from recommender.models.autorec import ItemAutoRec
    from recommender.models.base import RatingModel
    from recommender.models.biased_mf import BiasedMF
    from recommender.models.ensemble import HybridAutoRecEnsemble
    from recommender.models.factory import FAMILY_CLASSES, build_model, compile_model
    from recommender.models.hybrid import HybridRecommender
    from recommender.models.inputs import make_dataset, model_inputs, predict_ratings
    from recommender.models.mf import MatrixFactorization
    from recommender.models.ncf import NeuMF
    from recommender.models.two_tower import TwoTower

#: Where each public name lives. The families load (and import TensorFlow) on first use, so that
#: :mod:`.sizing`, which the train stage's memory guard runs before TensorFlow, imports nothing
#: heavy. ``import recommender.models.factory`` loads and registers every family.
_WHERE = {
    "BiasedMF": "recommender.models.biased_mf",
    "FAMILY_CLASSES": "recommender.models.factory",
    "HybridAutoRecEnsemble": "recommender.models.ensemble",
    "HybridRecommender": "recommender.models.hybrid",
    "ItemAutoRec": "recommender.models.autorec",
    "MatrixFactorization": "recommender.models.mf",
    "NeuMF": "recommender.models.ncf",
    "RatingModel": "recommender.models.base",
    "TwoTower": "recommender.models.two_tower",
    "build_model": "recommender.models.factory",
    "compile_model": "recommender.models.factory",
    "make_dataset": "recommender.models.inputs",
    "model_inputs": "recommender.models.inputs",
    "predict_ratings": "recommender.models.inputs",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "FAMILY_CLASSES",
    "BiasedMF",
    "HybridAutoRecEnsemble",
    "HybridRecommender",
    "ItemAutoRec",
    "MatrixFactorization",
    "NeuMF",
    "RatingModel",
    "TwoTower",
    "build_model",
    "compile_model",
    "make_dataset",
    "model_inputs",
    "predict_ratings",
]
