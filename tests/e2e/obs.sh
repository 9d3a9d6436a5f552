#!/usr/bin/env bash
# Observability end to end (docs/observability.md), with real parts: the gateway (prometheus, opentelemetry and
# ai-audit-log plugins on) in front of tests/mock/providers.js, and
#  - tests/e2e/obs/dashboard.mjs: the dashboard in headless Chromium (Debian chromium, npm puppeteer-core);
#    screenshots go to $OBS_OUT (default: a temp dir, kept and printed when the test fails);
#  - tests/e2e/obs/prometheus.mjs: a real Prometheus server (Debian prometheus, started here on a free port
#    with a generated scrape config: 1 s interval, the admin key as a Bearer token) scrapes /metrics while load
#    runs; the test queries /api/v1/query for the request and token counts it sent;
#  - tests/e2e/obs/traces.mjs: a Node client instrumented with the OpenTelemetry JS SDK calls the gateway through
#    the openai SDK; one OTLP/HTTP receiver collects the client's and the gateway's spans.
# Ports are free ones; every process is stopped at the end; bounded by timeouts.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${SLUICE_BIN:-}
if [ -z "$BIN" ]; then
    BIN=build/sluice
    if [ -x build-asan/sluice ] && { [ ! -x "$BIN" ] || [ build-asan/sluice -nt "$BIN" ]; }; then BIN=build-asan/sluice; fi
fi
for m in puppeteer-core @opentelemetry/sdk-trace-node @opentelemetry/exporter-trace-otlp-http openai; do
    [ -d "tests/e2e/node_modules/$m" ] || { (cd tests/e2e && timeout 300 npm ci --no-audit --no-fund >/dev/null); break; }
done
command -v prometheus >/dev/null || { echo "prometheus is missing (scripts/deps.sh installs it)"; exit 1; }
[ -x /usr/bin/chromium ] || { echo "chromium is missing (scripts/deps.sh installs it)"; exit 1; }
dir=$(mktemp -d /tmp/sluice-obs-XXXXXX)
OUT=${OBS_OUT:-$ROOT/build/e2e-obs} # screenshots, kept
mkdir -p "$OUT"
pids=()
keep=0
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
MOCK=$(port); BAD=$(port); GW=$(port); ADMIN=$(port); OTLP=$(port); PROM=$(port)
KEY="obs-admin-key-$RANDOM$RANDOM"
node tests/mock/providers.js "$MOCK" >"$dir/mock.log" 2>&1 & pids+=($!)
node tests/mock/providers.js "$BAD" >"$dir/mock-bad.log" 2>&1 & pids+=($!)
wait_port "$MOCK"; wait_port "$BAD"
curl -s -X POST "http://127.0.0.1:$BAD/__config" -d '{"status":500}' >/dev/null
cat > "$dir/sluice.yaml" <<YAML
node:
  listen: ["127.0.0.1:$GW"]
  workers: 2
  admin: {listen: "127.0.0.1:$ADMIN", key: "$KEY"}
  plugin_paths: ["$ROOT/plugins"]
  access_log: {path: "$dir/access.log"}
providers:
  oai: {kind: openai, endpoint: "http://127.0.0.1:$MOCK", api_key: sk-mock, price: {gpt-4o-mini: {input: 0.15, output: 0.6}}}
  broken: {kind: openai, endpoint: "http://127.0.0.1:$BAD", api_key: sk-mock}
consumers:
  - {name: alice, keys: [alice-key]}
  - {name: bob, keys: [bob-key]}
  - {name: loader, keys: [load-key]}
routes:
  - id: chat
    paths: ["/v1/chat/completions"]
    plugins: {key-auth: {}, ai-proxy: {provider: oai}}
  - id: load
    paths: ["/load/v1/chat/completions"]
    plugins: {key-auth: {}, ai-proxy: {provider: oai}}
  - id: multi
    paths: ["/multi/v1/chat/completions"]
    plugins:
      ai-proxy-multi:
        strategy: priority
        backoff: {base: 0, max: 0}
        targets: [{provider: broken, priority: 10}, {provider: oai, priority: 1}]
global_plugins:
  prometheus: {}
  opentelemetry: {endpoint: "http://127.0.0.1:$OTLP/v1/traces", service_name: sluice-e2e, batch: {interval: 0.2}}
  ai-audit-log: {file: {path: "$dir/audit.log"}}
YAML
SLUICE_HOME=$ROOT "$BIN" -c "$dir/sluice.yaml" >"$dir/gw.log" 2>&1 & pids+=($!)
wait_port "$GW"; wait_port "$ADMIN"
cat > "$dir/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: sluice
    metrics_path: /metrics
    authorization: {type: Bearer, credentials: "$KEY"}
    static_configs: [{targets: ["127.0.0.1:$ADMIN"]}]
YAML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prom" --web.listen-address="127.0.0.1:$PROM" \
    >"$dir/prometheus.log" 2>&1 & pids+=($!)
wait_port "$PROM" || { echo "prometheus did not start"; tail -20 "$dir/prometheus.log"; exit 1; }
status=0
GATEWAY="http://127.0.0.1:$GW" ADMIN="http://127.0.0.1:$ADMIN" ADMIN_KEY="$KEY" OUT="$OUT" PROM="http://127.0.0.1:$PROM" \
OTLP_PORT="$OTLP" timeout 240 node --test --test-concurrency=1 tests/e2e/obs/*.mjs || status=$?
if grep -qE "AddressSanitizer|runtime error|\[error\]" "$dir/gw.log"; then
    echo "gateway reported errors:"; grep -E "AddressSanitizer|runtime error|\[error\]" "$dir/gw.log" | head; status=1
fi
[ -s "$dir/audit.log" ] || { echo "no audit records written"; status=1; }
if [ "$status" -ne 0 ]; then
    keep=1
    echo "--- gateway log"; tail -20 "$dir/gw.log"
    echo "--- prometheus log"; tail -5 "$dir/prometheus.log"
fi
echo "screenshots: $OUT"
exit "$status"
