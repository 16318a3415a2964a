"""The preprocess stage: ids to indices, train/val/test splits, item and user features.

- :mod:`.split`: the stage's work (splits, encoding, the summary). What it writes, and the readers
  of it, live in :mod:`recommender.dataset`.
"""
