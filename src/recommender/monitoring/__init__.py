"""``make monitor``: the service's inference log read back against the training data.

- :mod:`.logs`: the log contract and its streaming reader (:func:`read_log`, also the feedback
  stage's entry point; :func:`~.logs.scan_log` keeps only chosen columns, as compact arrays);
- :mod:`.drift`: population stability index and Jensen-Shannon distance over training-fixed bins;
- :mod:`.online`: hit rate@K and NDCG@K of the served lists that positive feedback followed;
- :mod:`.checks`: the window's ratings as canonical ratings, run through the validate stage's
  Great Expectations suites;
- :mod:`.feedback`: the ``feedback`` stage's snapshot of every logged rating;
- :mod:`.figures`: traffic, drift and online figures and the retrain verdict;
- :mod:`.runlog`: the champion's offline NDCG@K and the ``monitoring`` MLflow run;
- :mod:`.report`, :mod:`.run`: the self-contained ``index.html`` and the run that writes
  ``reports/monitor/`` atomically.

Not a DVC stage: it reads what the service wrote since the last run, so it is run by hand or on a
schedule (``make monitor``). Nothing heavy happens at import: Great Expectations and MLflow are
imported where they are used.

Usage::

    frame, stats = read_log("logs/inference", "feedback", since=t0, until=t1)
"""

from recommender.monitoring.logs import CONTRACT, ENDPOINTS, LogStats, read_log

__all__ = ["CONTRACT", "ENDPOINTS", "LogStats", "read_log"]
