"""Deep-learning recommender: data stages, Keras models, MLflow tracking and BentoML serving.

The pipeline's stages live in ``pipeline/`` (one thin script each) and call into this package.
"""

from recommender.telemetry import disable_telemetry

# Every process that imports the library stays off the network: the tools below each phone home
# unless told not to. Only environment variables are set here (cheap, no files, no imports).
disable_telemetry()

__all__ = ["disable_telemetry"]
