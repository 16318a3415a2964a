"""A register stage reduced to its gate: the lock, a look at the champion, tags, the alias move.

The race tests of ``test_gate_lock.py`` start a few of these once and then hand them trials, one
JSON line each on stdin, so twenty trials cost seconds, not twenty imports of MLflow:

    python lock_contender.py <tracking uri>
    {"name": "race-3", "version": "2", "start": 1780000000.5, "jitter": 0.02, "hold": 0.2}

At ``start`` plus ``jitter`` (Unix time; the test gives each contender its own jitter, so the
trials cover several interleavings) the contender takes ``recommender.registry``'s real gate
lock of ``name`` and, holding it, does what the gate does with the registry in the worst case:
reads ``@champion``, waits ``hold`` seconds (the judging), tags its version
``gate.decision=promoted`` over that champion, checks its lease and moves ``@champion`` to its
version. It answers one JSON line: its version, the champion it promoted over, and when (Unix
time) it held the lock. An error is answered as ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys
import time

import mlflow

from recommender.tracking.gate_lock import gate_lock
from recommender.tracking.registry import CHAMPION, alias_version


def main() -> int:
    uri = sys.argv[1]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        trial = json.loads(line)
        name, version = trial["name"], str(trial["version"])
        while time.time() < trial["start"] + trial.get("jitter", 0.0):
            time.sleep(0.001)
        try:
            with gate_lock(client, name, wait_s=trial.get("wait_s", 60.0)) as lease:
                entered = time.time()
                champion = alias_version(client, name, CHAMPION)
                over = None if champion is None else str(champion.version)
                time.sleep(trial.get("hold", 0.2))
                client.set_model_version_tag(name, version, "gate.decision", "promoted")
                client.set_model_version_tag(name, version, "gate.champion_version", str(over))
                lease.check()
                client.set_registered_model_alias(name, CHAMPION, version)
                left = time.time()
            answer = {"version": version, "over": over, "entered": entered, "left": left}
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
