#!/usr/bin/env bash
# Makes sure a Debian package a test needs is installed: ensure_debian_package.sh PACKAGE PATH_GLOB
# (the file that proves it is there). `make test` runs it for:
# - postgresql (/usr/lib/postgresql/*/bin/pg_ctl): tests/integration/test_mlflow_server.py starts a
#   private cluster (initdb + pg_ctl, 127.0.0.1 only, a free port, a temporary folder) and stops it;
# - chromium (/usr/bin/chromium): tests/serving/test_swagger.py renders the service's / page in
#   headless Chromium, offline. Chromium comes from Debian's packages, never a browser download.
set -euo pipefail
package=$1 probe=$2
if compgen -G "$probe" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$package is missing ($probe): run 'sudo apt-get install -y --no-install-recommends $package'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$package" >/dev/null
compgen -G "$probe" >/dev/null
