"""The processed dataset: the files the preprocess stage writes and every later stage reads.

No stage owns these formats, so no stage imports another to read them:

- :mod:`.processed`: the output folder (splits, vocabularies, features, catalog) and its reader.
- :mod:`.vocabulary`: raw ids <-> indices, 0 for unknown ids (travels with the model).
- :mod:`.features`: item and user side features (genres, year; age, gender, occupation).
"""
