#!/usr/bin/env bash
# The official SDKs (openai, @anthropic-ai/sdk) against the gateway in front of a provider whose streams break:
# tests/mock/faulty_provider.js (resets, clean closes, stalls and garbage at every place of a stream, megabytes
# without a line end), OpenAI and Anthropic providers, both client APIs. Each SDK must get a whole answer or raise
# a clear APIError, never a cut answer that looks whole. Runs tests/e2e/sdk_faults/*.mjs with node's test runner.
# Ports are free ones; every process is stopped at the end; bounded by timeouts.
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
dir=$(mktemp -d /tmp/sluice-sdk-faults-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK=$(port); GW=$(port)
node tests/mock/faulty_provider.js "$MOCK" >"$dir/mock.log" 2>&1 & pids+=($!)
up="http://127.0.0.1:$MOCK"
# the fault is chosen by the model name (the mock reads it); read: the idle timeout that ends a stall
cat > "$dir/sluice.yaml" <<YAML
node:
  listen: ["127.0.0.1:$GW"]
  workers: 2
  plugin_paths: ["$ROOT/plugins"]
  access_log: {path: "$dir/access.log"}
providers:
  oa: {kind: openai, endpoint: "$up", api_key: "k", timeout: {read: 0.5}}
  an: {kind: anthropic, endpoint: "$up", api_key: "k", timeout: {read: 0.5}}
routes:
  - {id: oa, paths: ["/oa/v1/*"], plugins: {ai-proxy: {provider: oa}}}
  - {id: an, paths: ["/an/v1/*"], plugins: {ai-proxy: {provider: an}}}
YAML
SLUICE_HOME=$ROOT "$BIN" -c "$dir/sluice.yaml" >"$dir/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$GW") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$MOCK") 2>/dev/null; then break; fi
    sleep 0.1
done
status=0
GATEWAY="http://127.0.0.1:$GW" MOCK="$up" timeout 240 node --test --test-concurrency=1 tests/e2e/sdk_faults/*.mjs || status=$?
if grep -qE "AddressSanitizer|runtime error|\[error\] request" "$dir/gw.log"; then
    echo "gateway reported errors:"; status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- gateway log"; tail -20 "$dir/gw.log"
    echo "--- mock log"; tail -20 "$dir/mock.log"
fi
exit "$status"
