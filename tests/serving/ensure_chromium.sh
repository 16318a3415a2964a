#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed, for the Swagger UI test (tests/serving/test_swagger.py
# renders the service's / page in headless Chromium, offline, and reads every URL it loaded).
# `make test` runs this; Chromium comes from Debian's packages, never a browser download.
set -euo pipefail
if command -v chromium >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "Chromium is missing: run 'sudo apt-get install -y --no-install-recommends chromium'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
