#!/usr/bin/env bash
# Installs what is missing, builds, and runs Sluice in the foreground with conf/sluice.yaml (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
if [ -z "${SLUICE_ADMIN_KEY:-}" ]; then
    SLUICE_ADMIN_KEY=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    export SLUICE_ADMIN_KEY
    echo "sluice: SLUICE_ADMIN_KEY was not set; the Admin API key for this run is: $SLUICE_ADMIN_KEY" >&2
fi
exec ./build/sluice -c "${1:-conf/sluice.yaml}"
