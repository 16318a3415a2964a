"""The evaluate stage: rating error and ranking quality on the test split, next to baselines.

- :mod:`.metrics`: rating and ranking metrics (NumPy).
- :mod:`.baselines`: global mean and the regularized bias baseline.
- :mod:`.evaluate`: the evaluation itself; :mod:`.run`: the stage's reports and MLflow logging.
- :mod:`.plots`: the PNG figures.
"""
