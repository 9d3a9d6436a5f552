#!/usr/bin/env bash
# Instructions per request of the gateway, counted by valgrind's callgrind: a number that does not depend on
# what else the machine is doing, for A/B of a change on a shared machine (wall-clock runs there are noise).
#
#   bench/instr.sh [CASE ...]            cases: plain (default), plain-log, ai, ai-log; nginx, nginx-log (the
#                                        nginx proxy_pass baseline of bench/run.sh, one process, for scale);
#                                        ai-key (ai, sent a client key), ai-limits, ai-limits-mc (key-auth and
#                                        ai-rate-limit with two token limits, counters in the shared dict or in a
#                                        memcached started here: the gateway's side only, memcached not counted);
#                                        lua-fixed: the floor of a request that enters the Lua VM: a route whose
#                                        one plugin answers a fixed body in access (`return 200, body`);
#                                        lua-filter: the same plus a plugin with a header_filter (sets a header)
#                                        and one with a log phase (no work): every phase runner has something to run;
#                                        ai-fixed: ai-proxy's access (the request parsed, checked, its usage
#                                        record begun), then bench-fixed answers: the floor of an AI route
#                                        ai-cache: cache-hit (L1), cache-l2 (L1 off, memcached), cache-miss and
#                                        ai-unique (every request a different one: the miss and its baseline);
#                                        ai-prom, ai-otel, ai-audit, ai-obs (the observability plugins alone and
#                                        together, docs/observability.md), ai-extra (ai-proxy + INSTR_PLUGINS,
#                                        flow YAML, e.g. 'prometheus: {}');
#                                        ai4k, ai4k-safety: the AI route with a 4 KB prompt, without and with
#                                        ai-prompt-guard + ai-pii (every detector; payloads/chat-4k.json);
#                                        ai4k-pii: with ai-pii alone
#                                        ai-stream, ai-stream-moderation: a streamed answer (payloads/stream.sse, 10
#                                        events) without and with ai-moderation (local categories) checking it
#                                        ai-rag: the ai route with ai-rag (hybrid, k 4) on an index of
#                                        RAG_FILES x RAG_SECTIONS (500 x 20 = 10,000) synthetic chunks of
#                                        RAG_DIMS (768) dimensions and RAG_PROBES (8) IVF probes, built first
#                                        with `sluice rag build`
#                                        (bench/rag_corpus.py; the mock provider's embeddings); the query's
#                                        embedding comes from an HTTP provider (the nginx upstream answers
#                                        /v1/embeddings with the mock's vector of the bench question, in the
#                                        OpenAI format): what a gateway pays in production, an upstream
#                                        exchange and a JSON vector to read, not the embedding model's work.
#                                        ai-rag-mock: the same with the query embedded in Lua inside the
#                                        gateway by the mock provider (256 dimensions; the first bench of
#                                        issue 17, which charged the gateway for the embedder's work)
#   SLUICE_BIN=/tmp/old/build/sluice bench/instr.sh plain      another build (its own Lua tree: the source
#                                                              directory it was built from)
#   REQUESTS=2000 (per case), CONNECTIONS=4, WARMUP=200, ZERO=0
#   CACHE_CONF='coalesce: false'             more ai-cache fields for the cache-* cases (what a part costs)
#
# For each case: an nginx upstream answers from memory; the gateway (workers: 1) runs under callgrind; a
# Python client sends REQUESTS requests over CONNECTIONS keep-alive connections, after a warm-up of WARMUP (200;
# the counts of the warm-up are taken off by a second, warm-up-only run); prints instructions per request, and the
# part of them that timers ran when it is 1000 or more (batch exports, metric flushes, the dashboard's ring of
# audit records: at ~100 requests a second under callgrind each run serves few requests, so that part is far
# larger per request than at real throughput; the rest is the request path's own work). A longer warm-up
# (WARMUP=2000) leaves fewer JIT compilations and trace aborts to the counted requests: steadier numbers for the
# Lua routes, whose run-to-run spread is several thousand instructions with 200. ZERO=1: one run per case instead
# of two, callgrind's counters zeroed after the warm-up and dumped after the counted requests (callgrind_control):
# what the two runs' warm-ups compiled differently (JIT traces) is not in the difference.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
REQUESTS=${REQUESTS:-2000}
CONNECTIONS=${CONNECTIONS:-4}
WARMUP=${WARMUP:-200}
ZERO=${ZERO:-0}
CASES=("$@")
[[ ${#CASES[@]} -gt 0 ]] || CASES=(plain)
command -v valgrind >/dev/null || { echo "instr: valgrind is missing" >&2; exit 2; }
TMP=$(mktemp -d -t sluice-instr.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ ${KEEP_TMP:-0} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

UP=$(port)
# the plugins of the lua-* cases, written here so that any SLUICE_BIN (another tree) runs the same ones
mkdir -p "$TMP/plugins"
{ echo '-- bench-fixed: answers every request with a fixed JSON body (what the upstream of the other cases sends)'
  echo 'local BODY = [==['"$(cat "$HERE/lib/payloads/completion.json")"']==]'
  echo 'return { name = "bench-fixed", version = "1.0", priority = 1000, access = function() return 200, BODY end }'
} >"$TMP/plugins/bench-fixed.lua"
cat >"$TMP/plugins/bench-filter.lua" <<'EOF2'
-- bench-filter: a header on every response (header_filter) and a log phase that does nothing
local set_header = require("sluice").response.set_header
return { name = "bench-filter", version = "1.0", priority = 900,
         header_filter = function(_, ctx) set_header("x-bench", "1", ctx) end, log = function() end }
EOF2
mkdir -p "$TMP/up"
# ai-rag*: the corpus and the question first (seeded, the same every run); ai-rag's embedder is the upstream,
# which answers with the mock provider's vector of the question (so retrieval finds what it would in-gateway)
RAG_QUERY="" EMBEDDING=""
if [[ " ${CASES[*]} " == *" ai-rag"* ]]; then
  python3 "$HERE/rag_corpus.py" "$TMP/corpus" "${RAG_FILES:-500}" "${RAG_SECTIONS:-20}"
  RAG_QUERY=$(python3 - "$TMP/corpus/doc0007.md" <<'PY'
import sys
words = [l for l in open(sys.argv[1]).read().split("\n") if l and not l.startswith("#")][3].split()[:12]
print("What about " + " ".join(words) + "?")
PY
)
  # (too long for an nginx string: a file, served for the POST through error_page) with the numbers as OpenAI
  # writes them, a float32 in 17 significant digits (about 20 bytes a number)
  cat >"$TMP/embedding.lua" <<'LUA'
package.path = arg[1] .. "/lua/?.lua;" .. arg[1] .. "/lua/?/init.lua;" .. package.path
local v = require("sluice.ai.drivers.mock").embed_text(arg[2], tonumber(arg[3]))
local f, out = require("ffi").new("float[1]"), {}
for i = 1, #v do f[0] = v[i]; out[i] = string.format("%.17g", f[0]) end
io.write('{"object":"list","data":[{"object":"embedding","index":0,"embedding":[', table.concat(out, ","),
  ']}],"model":"text-embedding-bench","usage":{"prompt_tokens":20,"total_tokens":20}}')
LUA
  luajit "$TMP/embedding.lua" "$ROOT" "$RAG_QUERY" "${RAG_DIMS:-768}" >"$TMP/up/embeddings.json"
  EMBEDDING=$TMP/up/embeddings.json
  chmod a+x "$TMP" "$TMP/up" && chmod a+r "$EMBEDDING" # nginx's worker (nobody when run as root) reads it
fi
COMPLETION=$(python3 -c 'import sys; print(open(sys.argv[1]).read().replace("\\","\\\\").replace("'"'"'","\\'"'"'").replace("\n","\\n"), end="")' "$HERE/lib/payloads/completion.json")
SSE=$(python3 -c 'import sys; print(open(sys.argv[1]).read().replace("\\","\\\\").replace("'"'"'","\\'"'"'").replace("\n","\\n"), end="")' "$HERE/lib/payloads/stream.sse")
cat >"$TMP/up/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/up/nginx.pid; error_log $TMP/up/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $TMP/up/b; proxy_temp_path $TMP/up/p; fastcgi_temp_path $TMP/up/f;
  uwsgi_temp_path $TMP/up/u; scgi_temp_path $TMP/up/s; keepalive_requests 100000000;
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '$COMPLETION'; }
    location /sse/ { default_type text/event-stream; return 200 '$SSE'; }
    $( [[ -n $EMBEDDING ]] && echo "location = /v1/embeddings { error_page 405 =200 /embeddings.json; return 405; }
      location = /embeddings.json { internal; default_type application/json; root $TMP/up; }" ) } }
EOF
/usr/sbin/nginx -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf" </dev/null &
PIDS+=($!)
wait_port "$UP" || { echo "instr: upstream did not start" >&2; exit 2; }

client() { # port path body n conns [extra header line] [unique: 1]
  python3 - "$@" <<'PY'
import socket, sys, threading, itertools, random
port, path, body, n, conns = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
extra = (sys.argv[6] + "\r\n") if len(sys.argv) > 6 and sys.argv[6] else ""
unique = len(sys.argv) > 7 and sys.argv[7] == "1"
seq, run_id = itertools.count(), random.randrange(1 << 30)
def request():
    b = body
    if unique: # a different body every time: a counter in front of the first "content" string
        at = b.index('"content":"') + 11
        b = b[:at] + "%d-%d " % (run_id, next(seq)) + b[at:]
    b = b.encode()
    return (("POST %s HTTP/1.1\r\nHost: bench\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (path, extra, len(b))).encode() + b
            if b else ("GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n" % (path, extra)).encode())
req = request()
def run(k):
    s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
    for _ in range(k):
        s.sendall(request() if unique else req)
        line = f.readline(); assert line.startswith(b"HTTP/1.1 200"), line
        length, chunked = 0, False
        while True:
            h = f.readline()
            if h in (b"\r\n", b""): break
            if h.lower().startswith(b"content-length:"): length = int(h.split(b":")[1])
            if h.lower().startswith(b"transfer-encoding:") and b"chunked" in h.lower(): chunked = True
        if not chunked:
            f.read(length); continue
        while True:  # a streamed answer: chunks to the last one
            size = int(f.readline().split(b";")[0], 16)
            f.read(size + 2)
            if size == 0: break
    s.close()
ts = [threading.Thread(target=run, args=(n // conns,)) for _ in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
}

# the memcached of the ai-limits-mc and cache-l2 cases (not measured), one per measure: a fresh one holds nothing
# of the last run. Sets MC_PORT and MC_PID: measure runs in a $(...) subshell, whose PIDS the cleanup never sees,
# so measure stops it itself.
MC_PORT="" MC_PID=""
start_memcached() {
  MC_PORT=$(port)
  local user=(); [[ $(id -u) == 0 ]] && user=(-u root)
  /usr/bin/memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 256 "${user[@]}" >"$TMP/memcached.log" 2>&1 &
  MC_PID=$!
  wait_port "$MC_PORT" || { echo "instr: memcached did not start" >&2; exit 2; }
}

measure() { # case n_requests -> total instructions (Ir) of the gateway process, and those under sl_vm_timer
  local kind=$1 n=$2 gw log=off path=/static/chat.json body="" auth=""
  gw=$(port)
  [[ $kind == *-log ]] && log=$TMP/access.log
  if [[ ${kind%-log} == nginx ]]; then
    mkdir -p "$TMP/px"
    cat >"$TMP/px/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $TMP/px/nginx.pid; error_log $TMP/px/error.log warn;
events { worker_connections 1024; }
http { client_body_temp_path $TMP/px/b; proxy_temp_path $TMP/px/p; fastcgi_temp_path $TMP/px/f;
  uwsgi_temp_path $TMP/px/u; scgi_temp_path $TMP/px/s; keepalive_requests 100000000;
  $( [[ $log == off ]] && echo "access_log off;" || echo "access_log $log combined buffer=64k flush=1s;" )
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  proxy_http_version 1.1; proxy_set_header Connection "";
  server { listen 127.0.0.1:$gw; location / { proxy_pass http://up; } } }
EOF
    valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.$kind.$n" /usr/sbin/nginx -p "$TMP/px" \
      -e "$TMP/px/error.log" -c "$TMP/px/nginx.conf" >"$TMP/gw.log" 2>&1 &
  else
  local mcnode=""
  if [[ ${kind%-log} == ai-limits-mc || ${kind%-log} == cache-l2 ]]; then
    start_memcached
    mcnode=", memcached: {servers: [\"127.0.0.1:$MC_PORT\"]}"
  fi
  [[ ${kind%-log} == cache-* ]] && mcnode="$mcnode, shared_dicts: {ai-cache: 256m}"
  [[ ${kind%-log} == lua-* || ${kind%-log} == ai-fixed ]] && mcnode="$mcnode, plugin_paths: [plugins, \"$TMP/plugins\"]"
  {
    echo "node: {listen: [\"127.0.0.1:$gw\"], workers: 1, log_level: warn, access_log: {path: \"$log\"}$mcnode}"
    case ${kind%-log} in
      plain) echo "routes: [{id: plain, paths: [\"/*\"], upstream: {nodes: [\"127.0.0.1:$UP\"]}}]" ;;
      lua-fixed) echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {bench-fixed: {}}}]" ;;
      ai-fixed) echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}, bench-fixed: {}}}]" ;;
      lua-filter) echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {bench-fixed: {}, bench-filter: {}}}]" ;;
      ai|ai-key|ai-unique) echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}}}]" ;;
      ai-limits|ai-limits-mc)
          local policy=local
          [[ ${kind%-log} == ai-limits-mc ]] && policy=memcached
          echo "consumers: [{name: bench, keys: [bench-client-key-0123456789]}]"
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {key-auth: {}, ai-proxy: {provider: bench},"
          echo "  ai-rate-limit: {policy: $policy, limits: [{metric: total_tokens, limit: 1000000000000, window: 1m},"
          echo "                                             {metric: total_tokens, limit: 1000000000000, window: 1d}]}}}]" ;;
      cache-*) # ai-proxy + ai-cache (docs/caching.md); the node line above has the dict (and memcached)
          local l1=true
          [[ ${kind%-log} == cache-l2 ]] && l1=false
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}, ai-cache: {scope: global, l1: $l1${CACHE_CONF:+, $CACHE_CONF}}}}]" ;;
      ai4k) echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}}}]" ;;
      ai4k-safety)
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench},"
          # the same rules as bench/run.sh's ai-safety case
          echo "  ai-prompt-guard: {deny: [{name: injection, pattern: 'ignore (all|any|the) (previous|prior|above) (instructions|rules)', flags: i},"
          echo "    {name: system-prompt, pattern: '(reveal|print|show) (your|the) (system prompt|instructions)', flags: i},"
          echo "    {name: jailbreak, pattern: '\\b(DAN|developer mode|jailbreak)\\b'}]},"
          echo "  ai-pii: {detectors: [all]}}}]" ;;
      ai-stream|ai-stream-moderation)
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP/sse\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}"
          # the same categories as bench/run.sh's ai-moderation case
          [[ ${kind%-log} == ai-stream-moderation ]] && echo ", ai-moderation: {categories: [
            {name: violence, keywords: [kill, murder, bomb, shoot, stab, massacre, assault], patterns: ['\\bblow(ing)? up\\b']},
            {name: self-harm, keywords: [suicide, self-harm, cut myself]}, {name: profanity, keywords: [damn, crap], action: flag}]}"
          echo "}}]" ;;
      ai4k-pii)
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}, ai-pii: {}}}]" ;;
      ai-prom|ai-otel|ai-audit|ai-obs|ai-extra) # the observability plugins alone (prometheus; opentelemetry sampling every
          # trace to the upstream nginx as collector; ai-audit-log to a file) and all three (ai-obs)
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}}"
          otel=", opentelemetry: {endpoint: \"http://127.0.0.1:$UP/v1/traces\"}"
          audit=", ai-audit-log: {file: {path: \"$TMP/audit.log\"}}"
          case ${kind%-log} in
            ai-prom) extra=", prometheus: {}" ;;
            ai-otel) extra=$otel ;;
            ai-audit) extra=$audit ;;
            ai-obs) extra=", prometheus: {}$otel$audit" ;;
            ai-extra) extra=", ${INSTR_PLUGINS:?ai-extra needs INSTR_PLUGINS (flow YAML, e.g. 'prometheus: {}')}" ;;
          esac
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench}$extra}}]" ;;
      ai-rag|ai-rag-mock) # the index is built by the mock provider; ai-rag then embeds queries over HTTP
          local emb="{kind: mock}" dims=""
          [[ ${kind%-log} == ai-rag ]] && emb="{kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}" \
            dims=", dimensions: ${RAG_DIMS:-768}"
          echo "providers: {bench: {kind: openai-compatible, endpoint: \"http://127.0.0.1:$UP\", api_key: x}, emb: $emb}"
          echo "routes: [{id: chat, paths: [\"/v1/chat/completions\"], plugins: {ai-proxy: {provider: bench},"
          # probes pinned (RAG_PROBES, default 8: the default of 100 lists before probes were measured at build):
          # the mock's hashed bag-of-words vectors are nearly random, so the measured default is the most it may
          # be (a quarter of the lists), which buys recall with a 3x scan (bench_knn measures that trade)
          echo "  ai-rag: {k: 4, index: {name: bench, file: \"$TMP/${kind%-log}.idx\", source: \"$TMP/corpus\", provider: emb$dims,"
          echo "    ivf: {probes: ${RAG_PROBES:-8}}}}}}]" ;;
    esac
  } >"$TMP/sluice.yaml"
  if [[ ${kind%-log} == ai-rag* && ! -f $TMP/${kind%-log}.idx ]]; then
    sed 's/emb: {kind: openai-compatible[^}]*}/emb: {kind: mock}/' "$TMP/sluice.yaml" >"$TMP/rag-build.yaml"
    local t0=$SECONDS
    "$SLUICE_BIN" rag build -c "$TMP/rag-build.yaml" bench >"$TMP/rag-build.log" 2>&1 ||
      { echo "instr: rag build failed: $(tail -3 "$TMP/rag-build.log")" >&2; exit 2; }
    echo "$kind index: $(grep -o '[0-9]* chunks ([0-9]* embedded), [0-9]* dimensions' "$TMP/rag-build.log" | tail -1), built in $((SECONDS - t0)) s" >&2
  fi
  valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.$kind.$n" "$SLUICE_BIN" -c "$TMP/sluice.yaml" \
    >"$TMP/gw.log" 2>&1 &
  fi
  if [[ ${kind%-log} == ai* || ${kind%-log} == cache-* || ${kind%-log} == lua-* ]]; then path=/v1/chat/completions; body=$(cat "$HERE/lib/payloads/chat.json"); fi
  local unique=0
  [[ ${kind%-log} == cache-miss || ${kind%-log} == ai-unique ]] && unique=1
  [[ ${kind%-log} == ai-key || ${kind%-log} == ai-limits* ]] && auth="Authorization: Bearer bench-client-key-0123456789"
  if [[ $kind == ai4k* ]]; then path=/v1/chat/completions; body=$(cat "$HERE/lib/payloads/chat-4k.json"); fi
  if [[ $kind == ai-stream* ]]; then body=$(cat "$HERE/lib/payloads/chat-stream.json"); fi
  if [[ ${kind%-log} == ai-rag* ]]; then # a question in the corpus' words, so retrieval finds chunks to inject
    body=$(python3 - "$HERE/lib/payloads/chat.json" "$RAG_QUERY" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
b["messages"][-1]["content"] = sys.argv[2]
print(json.dumps(b))
PY
)
  fi
  local vpid=$!
  wait_port "$gw" || { echo "instr: gateway did not start: $(tail -3 "$TMP/gw.log")" >&2; exit 2; }
  client "$gw" "$path" "$body" "$WARMUP" "$CONNECTIONS" "$auth" "$unique"   # warm-up: JIT traces, pools, caches
  local out="$TMP/callgrind.out.$kind.$n"
  if [[ $ZERO == 1 ]]; then # counters zeroed after the warm-up, dumped after the counted requests: one run
    callgrind_control -z "$vpid" >/dev/null
    client "$gw" "$path" "$body" "$n" "$CONNECTIONS" "$auth" "$unique"
    callgrind_control -d "$vpid" >/dev/null
    out=$(ls "$TMP"/callgrind.out."$kind"."$n".* | head -1)
  else
    (( n > 0 )) && client "$gw" "$path" "$body" "$n" "$CONNECTIONS" "$auth" "$unique"
  fi
  kill -TERM "$vpid"; wait "$vpid" 2>/dev/null || true
  if [[ -n $MC_PID ]]; then kill "$MC_PID" 2>/dev/null || true; wait "$MC_PID" 2>/dev/null || true; fi
  # the total, and the part run by timers (sl_vm_timer: flushes, exports, the dashboard ring; also HTTP replies
  # to them): under callgrind (~100 requests a second) a timer serves far fewer requests per run than at real
  # throughput, so that part is printed on its own
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '
    /PROGRAM TOTALS/ && !d {gsub(",", "", $1); total = $1; d = 1}
    /:sl_vm_timer / && !t {gsub(",", "", $1); timers = $1; t = 1}
    END {print total + 0, timers + 0}'
}

for c in "${CASES[@]}"; do
  base=0 base_timers=0
  if [[ $ZERO != 1 ]]; then
    out=$(measure "$c" 0)
    read -r base base_timers <<<"$out"
  fi
  out=$(measure "$c" "$REQUESTS")
  read -r total timers <<<"$out"
  who=$([[ ${c%-log} == nginx ]] && echo nginx || basename "$(dirname "$(dirname "$SLUICE_BIN")")")
  t=$(( (timers - base_timers) / REQUESTS ))
  echo "$c: $(( (total - base) / REQUESTS )) instructions per request ($REQUESTS requests, $who$( ((t >= 1000)) && echo "; timers $t of them"))"
done
