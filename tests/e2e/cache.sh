#!/usr/bin/env bash
# ai-cache with the official SDKs (openai, @anthropic-ai/sdk): two gateway nodes (A and B) sharing one memcached,
# providers played by tests/mock/providers.js. Runs tests/e2e/cache/*.mjs with node's test runner: misses then
# hits, streamed and not, across client formats, a miss on A served on B; the SDKs must parse every replayed
# answer and get the same text and usage. Ports are free ones; every process is stopped at the end; bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${SLUICE_BIN:-}
if [ -z "$BIN" ]; then
    BIN=build/sluice
    if [ -x build-asan/sluice ] && { [ ! -x "$BIN" ] || [ build-asan/sluice -nt "$BIN" ]; }; then BIN=build-asan/sluice; fi
fi
if [ ! -d tests/e2e/node_modules/openai ] || [ ! -d tests/e2e/node_modules/@anthropic-ai/sdk ]; then
    (cd tests/e2e && timeout 300 npm ci --no-audit --no-fund >/dev/null)
fi
command -v memcached >/dev/null || { echo "memcached is missing (scripts/deps.sh installs it)"; exit 1; }
dir=$(mktemp -d /tmp/sluice-cache-e2e-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK=$(port); MC=$(port); GA=$(port); GB=$(port)
node tests/mock/providers.js "$MOCK" >"$dir/mock.log" 2>&1 & pids+=($!)
user=(); [ "$(id -u)" = 0 ] && user=(-u root)
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 16 "${user[@]}" >"$dir/mc.log" 2>&1 & pids+=($!)
up="http://127.0.0.1:$MOCK"
config() { # listen port
    cat <<YAML
node:
  listen: ["127.0.0.1:$1"]
  workers: 2
  plugin_paths: ["$ROOT/plugins"]
  access_log: {path: "$dir/access-$1.log"}
  shared_dicts: {ai-cache: 16m}
  memcached: {servers: ["127.0.0.1:$MC"], timeout: 1}
providers:
  openai-mock:
    kind: openai
    endpoint: "$up"
    api_key: "sk-mock-openai"
    models: {gpt-4o-mini: gpt-4o-mini-2024-07-18}
    price: {gpt-4o-mini: {input: 0.15, output: 0.6}}
  anthropic-mock:
    kind: anthropic
    endpoint: "$up"
    api_key: "sk-mock-anthropic"
    models: {claude-3-5-haiku: claude-3-5-haiku-20241022}
routes:
  - id: openai
    paths: ["/openai/v1/*"]
    plugins: {ai-proxy: {provider: openai-mock}, ai-cache: {scope: global}}
  - id: anthropic
    paths: ["/anthropic/v1/*"]
    plugins: {ai-proxy: {provider: anthropic-mock}, ai-cache: {scope: global}}
YAML
}
config "$GA" >"$dir/a.yaml"
config "$GB" >"$dir/b.yaml"
SLUICE_HOME=$ROOT "$BIN" -c "$dir/a.yaml" >"$dir/gw-a.log" 2>&1 & pids+=($!)
SLUICE_HOME=$ROOT "$BIN" -c "$dir/b.yaml" >"$dir/gw-b.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$GA") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$GB") 2>/dev/null &&
       (exec 3<>"/dev/tcp/127.0.0.1/$MOCK") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$MC") 2>/dev/null; then break; fi
    sleep 0.1
done
status=0
GATEWAY_A="http://127.0.0.1:$GA" GATEWAY_B="http://127.0.0.1:$GB" MOCK="$up" MEMCACHED_PORT="$MC" \
    timeout 120 node --test --test-concurrency=1 tests/e2e/cache/*.mjs || status=$?
if grep -qE "AddressSanitizer|runtime error|\[error\] request" "$dir/gw-a.log" "$dir/gw-b.log"; then
    echo "gateway reported errors:"; status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- gateway A log"; tail -20 "$dir/gw-a.log"
    echo "--- gateway B log"; tail -20 "$dir/gw-b.log"
    echo "--- mock log"; tail -20 "$dir/mock.log"
fi
exit "$status"
