"""Scoring and top-K ranking, shared by evaluation, the registry's gate and the service.

- :mod:`.factors`: a factor model as NumPy arrays (what ranking multiplies).
- :mod:`.ranking`: top-K with seen items masked, batched over users (the one ranking path).
- :mod:`.bundle`: a trained model with its vocabularies and catalog, speaking raw ids.
"""
