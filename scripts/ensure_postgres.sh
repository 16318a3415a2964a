#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL server binaries are installed, for the registry test
# (tests/integration/test_mlflow_server.py). The test itself starts a private cluster (initdb +
# pg_ctl, listening on 127.0.0.1 only, a free port, a temporary folder) and stops it afterwards,
# so nothing is left running and no system cluster is used.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL server binaries are missing: run 'sudo apt-get install -y postgresql'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null
