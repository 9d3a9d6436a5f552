#!/usr/bin/env bash
# Installs what Sluice needs to build, run and test on Debian 12. Idempotent; run as root.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libluajit2-5.1-dev luajit2 libuv1-dev node-llhttp libmbedtls-dev lua-cjson-dev
      libmemcached-dev libyaml-dev libpcre2-dev zlib1g-dev
      lua-busted lua-socket lua-cjson
      memcached etcd-server etcd-client nginx-light wrk curl openssl ca-certificates
      valgrind
      prometheus chromium  # tests/e2e/obs.sh: a real Prometheus server, the dashboard in headless Chromium
      clang libclang-rt-14-dev   # libFuzzer + sanitizers for tests/fuzz (scripts/fuzz.sh)
      clang-format lua-check)    # the lint step of scripts/test.sh
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from another source than Debian (the machine image has one); take Debian's only if absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The official SDKs for the end-to-end tests (tests/e2e/sdk.sh), pinned by tests/e2e/package-lock.json.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Also the OpenTelemetry JS SDK and puppeteer-core (tests/e2e/obs.sh; puppeteer-core drives Debian's chromium and
# downloads no browser).
if [ ! -d "$ROOT/tests/e2e/node_modules/openai" ] || [ ! -d "$ROOT/tests/e2e/node_modules/@anthropic-ai/sdk" ] ||
   [ ! -d "$ROOT/tests/e2e/node_modules/puppeteer-core" ] || [ ! -d "$ROOT/tests/e2e/node_modules/@opentelemetry/sdk-trace-node" ]; then
    echo "deps: npm ci --prefix tests/e2e"
    npm ci --prefix "$ROOT/tests/e2e" --no-audit --no-fund >/dev/null
fi
