"""The ``validate`` stage: a Great Expectations (GX Core 1.x) suite over the canonical tables.

Two suites, one per table, are built from ``params.validate`` and the dataset's rating scale
(:mod:`~recommender.validation.suites`), and run by GX's own pandas engine, or with
``data.engine: spark`` through its Spark datasource (:mod:`~recommender.validation.run`,
:mod:`~recommender.validation.spark_frames`). The outcome is a :class:`ValidationReport`
(:mod:`~recommender.validation.report`): a byte-stable summary for DVC (no wall-clock time in it)
and a text block naming each failed expectation, its column, how many rows broke it and a few of
those rows (read from GX's results by :mod:`~recommender.validation.failures`), so the user can fix
the data without opening HTML.

Great Expectations is imported inside the functions that need it: importing it costs seconds, and
``import recommender.validation`` (or ``pipeline/validate.py --help``) should not pay for it.

Usage::

    report = validate_dataset(read_dataset("data/interim"), params.validate_, docs_dir="docs")
    if not report.success:
        print(report.format_failures())
"""

from recommender.validation.report import Failure, ValidationReport
from recommender.validation.run import run_validate, validate_dataset
from recommender.validation.suites import build_suites, timestamp_bounds

__all__ = [
    "Failure",
    "ValidationReport",
    "build_suites",
    "run_validate",
    "timestamp_bounds",
    "validate_dataset",
]
