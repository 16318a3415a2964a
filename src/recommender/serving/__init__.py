"""The package stage and the service's logic.

- :mod:`.packaging`: the registry's champion into the BentoML store, and a Bento around it.
- :mod:`.api`: typed requests and responses and what the service answers
  (``serving/service.py`` wires it to HTTP).
"""
