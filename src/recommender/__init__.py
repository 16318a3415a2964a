"""Deep-learning recommender: data stages, Keras models, MLflow tracking and BentoML serving.

The pipeline's stages live in ``pipeline/`` (one thin script each) and call into this package;
each stage's logic is found under the stage's name:

==================  ===================================================================
``core``            typed params, errors, atomic writers, the dataset schema, stage runner
``data``            ingest: the data sources (synthetic, MovieLens, your csv)
``validation``      validate: the Great Expectations suite
``preprocess``      preprocess: splits, id vocabularies, item and user features
``models``          the Keras families, one module each, and their input pipeline
``training``        train (and ``make tune``)
``scoring``         factors, the one top-K path, the model bundle (evaluate, register, serve)
``evaluation``      evaluate: metrics, baselines, plots
``tracking``        MLflow: the tracking store, the pyfunc model
``registry``        register: the gate's statistics and the registry writes
``serving``         package, and the service's logic (``serving/service.py`` wires it)
==================  ===================================================================

Importing it does nothing else: no environment changes, no TensorFlow. Telemetry is turned off
where a process starts working (:func:`recommender.core.telemetry.disable_telemetry`).
"""
