#!/usr/bin/env bash
# The official SDKs (openai, @anthropic-ai/sdk) against the content-safety plugins: ai-prompt-guard refusals,
# ai-pii masking and restore (JSON and streams), ai-moderation stopping a stream that turns bad at event 7, both
# client formats, with the gateway's mock provider and the OpenAI / Anthropic providers of tests/mock/providers.js.
# Each SDK must read the answer without an error and see the content-filter reason. Runs
# tests/e2e/sdk_safety/*.mjs with node's test runner. Ports are free ones; every process is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# the newer of the two builds (scripts/test.sh makes the ASan one), unless SLUICE_BIN says
BIN=${SLUICE_BIN:-}
if [ -z "$BIN" ]; then
    BIN=build/sluice
    if [ -x build-asan/sluice ] && { [ ! -x "$BIN" ] || [ build-asan/sluice -nt "$BIN" ]; }; then BIN=build-asan/sluice; fi
fi
if [ ! -d tests/e2e/node_modules/openai ] || [ ! -d tests/e2e/node_modules/@anthropic-ai/sdk ]; then
    (cd tests/e2e && timeout 300 npm ci --no-audit --no-fund >/dev/null)
fi
dir=$(mktemp -d /tmp/sluice-sdk-safety-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK=$(port); GW=$(port)
node tests/mock/providers.js "$MOCK" >"$dir/mock.log" 2>&1 & pids+=($!)
up="http://127.0.0.1:$MOCK"
cat > "$dir/sluice.yaml" <<YAML
node:
  listen: ["127.0.0.1:$GW"]
  workers: 2
  plugin_paths: ["$ROOT/plugins"]
  access_log: {path: "$dir/access.log"}
providers:
  bad7: {kind: mock, options: {text: "Here is the plan for murder and more words after it until the very end"}}
  echo: {kind: mock, options: {echo: true, chunk_chars: 3}}
  openai-mock: {kind: openai, endpoint: "$up", api_key: "sk-mock-openai", models: {gpt-4o-mini: gpt-4o-mini}}
  anthropic-mock: {kind: anthropic, endpoint: "$up", api_key: "sk-mock-anthropic", models: {claude-3-5-haiku: claude-3-5-haiku-20241022}}
routes:
  - id: mod
    paths: ["/mod/v1/*"]
    plugins:
      ai-moderation: {categories: [{name: violence, keywords: [murder]}]}
      ai-proxy: {provider: bad7}
  - id: mod-openai
    paths: ["/mod-openai/v1/*"]
    plugins:
      ai-moderation: {categories: [{name: mockery, keywords: [mock]}], request: false}
      ai-proxy: {provider: openai-mock}
  - id: mod-anthropic
    paths: ["/mod-anthropic/v1/*"]
    plugins:
      ai-moderation: {categories: [{name: mockery, keywords: [mock]}], request: false}
      ai-proxy: {provider: anthropic-mock}
  - id: guard
    paths: ["/guard/v1/*"]
    plugins:
      ai-prompt-guard: {deny: [{name: injection, pattern: 'ignore (all|previous) instructions', flags: i}], message: "Blocked by policy."}
      ai-proxy: {provider: echo}
  - id: pii
    paths: ["/pii/v1/*"]
    plugins:
      ai-pii: {}
      ai-proxy: {provider: echo}
YAML
SLUICE_HOME=$ROOT "$BIN" -c "$dir/sluice.yaml" >"$dir/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$GW") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$MOCK") 2>/dev/null; then break; fi
    sleep 0.1
done
status=0
GATEWAY="http://127.0.0.1:$GW" timeout 120 node --test --test-concurrency=1 tests/e2e/sdk_safety/*.mjs || status=$?
if grep -qE "AddressSanitizer|runtime error|\[error\] request" "$dir/gw.log"; then
    echo "gateway reported errors:"; status=1
fi
if grep -q "bob@example.com" "$dir/gw.log" "$dir/access.log" "$dir/mock.log"; then
    echo "a personal value reached a log"; status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- gateway log"; tail -20 "$dir/gw.log"
    echo "--- mock log"; tail -20 "$dir/mock.log"
fi
exit "$status"
