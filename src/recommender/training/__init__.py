"""The train stage: fit a family with early stopping, refit, and record the run in MLflow.

- :mod:`.fit`: fitting and refitting one family on the preprocessed data.
- :mod:`.run`: the stage's work (fit, bundle, MLflow run and model).
- :mod:`.tuning`: ``make tune``'s Optuna search on the validation split.
"""
