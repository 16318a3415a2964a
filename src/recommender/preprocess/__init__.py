"""The preprocess stage: ids to indices, train/val/test splits, item and user features.

- :mod:`.split`: the stage's work (splits, encoding, the summary).
- :mod:`.vocabulary`: raw ids <-> indices, 0 for unknown ids (travels with the model).
- :mod:`.features`: item and user side features (genres, year; age, gender, occupation).
- :mod:`.processed`: the output folder every later stage reads.
"""
