"""The register stage: every trained model becomes a version; ``champion`` moves only through
the gate.

- :mod:`.gate`: the statistics (paired bootstrap over users) and the promotion rule.
- :mod:`.lineage`: what a candidate was made from, as version tags.
- :mod:`.register`: the stage: the version, the judgement, the alias move.

The registry client (versions, aliases, refusals) and the gate's lock are not the stage's: they
live in :mod:`recommender.tracking.registry` and :mod:`recommender.tracking.gate_lock`, which the
package stage reads ``@champion`` through too.
"""
