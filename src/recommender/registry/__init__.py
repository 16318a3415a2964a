"""The register stage: every trained model becomes a version; ``champion`` moves only through
the gate.

- :mod:`.gate`: the statistics (paired bootstrap over users) and the promotion rule.
- :mod:`.register`: the MLflow side: versions, lineage tags, the alias move.
"""
