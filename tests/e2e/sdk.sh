#!/usr/bin/env bash
# The official SDKs (openai, @anthropic-ai/sdk from tests/e2e/package.json) against the gateway, which serves
# OpenAI, Anthropic, Gemini, Bedrock and Azure OpenAI providers played by tests/mock/providers.js (strict: it
# answers a request the real provider would reject with that provider's 400). Runs tests/e2e/sdk/*.mjs with
# node's test runner. Ports are free ones; every process is stopped at the end; bounded by timeouts.
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
dir=$(mktemp -d /tmp/sluice-sdk-XXXXXX)
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
  openai-mock:
    kind: openai
    endpoint: "$up"
    api_key: "sk-mock-openai"
    models: {gpt-4o-mini: gpt-4o-mini-2024-07-18, text-embedding-3-small: text-embedding-3-small}
    price: {gpt-4o-mini: {input: 0.15, output: 0.6}}
  anthropic-mock:
    kind: anthropic
    endpoint: "$up"
    api_key: "sk-mock-anthropic"
    models: {claude-3-5-haiku: claude-3-5-haiku-20241022}
  gemini-mock:
    kind: gemini
    endpoint: "$up"
    api_key: "gk-mock"
    models: {gemini-3-pro: gemini-3-pro-preview}
  bedrock-mock:
    kind: bedrock
    endpoint: "$up"
    region: eu-west-1
    access_key: AKIDMOCKPROVIDER
    secret_key: "MOCK/secret+KEY"
    models: {claude-bedrock: "anthropic.claude-3-5-haiku-20241022-v1:0"}
  azure-mock:
    kind: azure-openai
    endpoint: "$up"
    api_key: "az-mock"
    deployment: gpt4o
  rate-limited:
    kind: anthropic
    endpoint: "$up/s/429/v1"
    api_key: "k"
routes:
  - id: limited
    paths: ["/limited/v1/*"]
    plugins: {ai-proxy: {provider: rate-limited}}
  - id: openai
    paths: ["/openai/v1/*"]
    plugins: {ai-proxy: {provider: openai-mock}}
  - id: anthropic
    paths: ["/anthropic/v1/*"]
    plugins: {ai-proxy: {provider: anthropic-mock}}
  - id: gemini
    paths: ["/gemini/v1/*"]
    plugins: {ai-proxy: {provider: gemini-mock}}
  - id: bedrock
    paths: ["/bedrock/v1/*"]
    plugins: {ai-proxy: {provider: bedrock-mock}}
  - id: azure
    paths: ["/azure/v1/*"]
    plugins: {ai-proxy: {provider: azure-mock}}
YAML
SLUICE_HOME=$ROOT "$BIN" -c "$dir/sluice.yaml" >"$dir/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$GW") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$MOCK") 2>/dev/null; then break; fi
    sleep 0.1
done
status=0
GATEWAY="http://127.0.0.1:$GW" MOCK="$up" timeout 120 node --test --test-concurrency=1 tests/e2e/sdk/*.mjs || status=$?
if grep -qE "AddressSanitizer|runtime error|\[error\] request" "$dir/gw.log"; then
    echo "gateway reported errors:"; status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- gateway log"; tail -20 "$dir/gw.log"
    echo "--- mock log"; tail -20 "$dir/mock.log"
fi
exit "$status"
