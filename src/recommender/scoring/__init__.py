"""Scoring, top-K ranking and the metrics that judge it, shared by training, evaluation, the
registry's gate and the service.

- :mod:`.factors`: a factor model as NumPy arrays (what ranking multiplies).
- :mod:`.ranking`: top-K with seen items masked, batched over users (the one ranking path).
- :mod:`.bundle`: a trained model with its vocabularies and catalog, speaking raw ids.
- :mod:`.metrics`: rating and ranking metrics, relevance sets, per-user NDCG of two models.
"""
