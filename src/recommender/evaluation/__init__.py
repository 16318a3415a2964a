"""The evaluate stage: rating error and ranking quality on the test split, next to baselines.

- :mod:`.baselines`: global mean, the regularized bias baseline and EASE.
- :mod:`.evaluate`: the evaluation itself; :mod:`.run`: the stage's reports and MLflow logging.
- :mod:`.plots`: the PNG figures.

The metrics themselves are :mod:`recommender.scoring.metrics`: the train stage's validation NDCG
and the registry's gate measure with them too.
"""
