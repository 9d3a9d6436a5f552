#!/usr/bin/env bash
# Smoke test for the benchmark harness (part of the test suite).
# Runs bench/run.sh end to end with tiny durations and connection counts and
# checks that it exits 0 and writes results JSON with the expected keys.
# It never asserts on timings. Sluice cases run when the binary exists
# (build it first; SLUICE_BUILD defaults to 0 here so the smoke test never
# compiles) and are reported as skipped otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(mktemp -d -t sluice-bench-smoke.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

export DURATION=${DURATION:-1s} C1_DURATION=${C1_DURATION:-1s} WARMUP=${WARMUP:-0}
export CONNECTIONS=${CONNECTIONS:-8} THREADS=${THREADS:-1} IDLE_CONNS=${IDLE_CONNS:-200}
export TTFT_REQUESTS=${TTFT_REQUESTS:-20} SSE_EVENTS=${SSE_EVENTS:-5} SSE_INTERVAL_MS=${SSE_INTERVAL_MS:-2}
export STREAM_LEVELS=${STREAM_LEVELS:-20} STREAM_EVENTS=${STREAM_EVENTS:-3} STREAM_INTERVAL_MS=${STREAM_INTERVAL_MS:-10}
export SLUICE_BUILD=${SLUICE_BUILD:-0} RESULTS_DIR=$OUT

start=$(date +%s)
rc=0
timeout 600 bash "$HERE/run.sh" >"$OUT/run.log" 2>&1 || rc=$?
if [[ $rc != 0 ]]; then
  cat "$OUT/run.log" >&2
  echo "bench smoke: FAIL: bench/run.sh exited $rc" >&2
  exit 1
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for f in ("latest.json", "latest.md"):
    assert os.path.exists(os.path.join(out, f)), "missing " + f
stamped = [f for f in os.listdir(out) if f[:8].isdigit() and f.endswith(".json")]
assert stamped, "no date-stamped results file"
d = json.load(open(os.path.join(out, "latest.json")))
for k in ("date", "meta", "ok", "failures", "cases"):
    assert k in d, "results lack key " + k
assert d["ok"] is True and d["failures"] == [], d["failures"]
for k in ("nproc", "cpu_model", "nginx_version", "sluice_commit", "duration", "connections"):
    assert k in d["meta"], "meta lacks " + k
names = [c["name"] for c in d["cases"]]
expected = ["direct", "nginx", "sluice-plain", "direct-chat", "nginx-chat", "sluice-ai", "sluice-ai-full",
            "direct-stream", "nginx-stream", "sluice-ai-stream", "direct-upload", "nginx-upload", "sluice-plain-upload",
            "direct-upload16k", "nginx-upload16k", "sluice-plain-upload16k", "ttft-direct", "ttft-nginx", "ttft-sluice-ai",
            "nginx-log", "sluice-plain-log", "nginx-chat-log", "sluice-ai-log",
            "streams-nginx", "streams-sluice-plain", "streams-sluice-ai",
            "sluice-cache-hit", "sluice-cache-l2", "sluice-ai-unique", "sluice-cache-miss"]
for n in expected:
    assert n in names, "case missing: " + n
for c in d["cases"]:
    for k in ("name", "status", "workload", "load", "c1", "derived"):
        assert k in c, "%s lacks %s" % (c["name"], k)
    assert c["status"] in ("ok", "skipped"), (c["name"], c["status"])
    if c["status"] == "skipped":
        assert c.get("reason"), c["name"] + " skipped without a reason"
        continue
    if c["workload"] == "streams":
        lv = c["streams"][0]
        assert lv["client"]["completed"] == lv["level"] and lv["rss_peak_kb"], (c["name"], lv)
        continue
    dv = c["derived"]
    for k in ("rps", "rps_ratio", "p50_ms", "p99_ms", "c1_p50_ms", "c1_p99_ms", "non2xx", "socket_errors"):
        assert k in dv, "%s lacks derived.%s" % (c["name"], k)
    assert dv["rps"] and dv["p50_ms"] is not None, c["name"] + " has no numbers"
    assert dv["non2xx"] == 0 and dv["socket_errors"] == 0, c["name"]
    if c["workload"] != "ttft":
        for k in ("p999_us", "p99_us", "p50_us", "rps"):
            assert k in c["load"], "%s load lacks %s" % (c["name"], k)
    if c["workload"].startswith("upload"):
        assert c["body_bytes"] > 0 and dv["body_mb_s"], c["name"] + " lacks the request body throughput"
    if c["server"] != "direct":
        assert c["rss_idle_kb"] and c["rss_load_max_kb"], c["name"] + " lacks RSS"
for n in ("nginx",) + (("sluice-plain",) if next(c for c in d["cases"] if c["name"] == "sluice-plain")["status"] == "ok" else ()):
    c = next(c for c in d["cases"] if c["name"] == n)
    assert c["idle_conns"] and c["idle_conns"]["client"]["opened"] == c["idle_conns"]["conns"], (n, c["idle_conns"])
ok = [c["name"] for c in d["cases"] if c["status"] == "ok"]
sk = [c["name"] for c in d["cases"] if c["status"] == "skipped"]
print("bench smoke: ok (%d cases measured, %d skipped: %s)" % (len(ok), len(sk), ", ".join(sk) or "none"))
PY
echo "bench smoke: finished in $(( $(date +%s) - start ))s"
