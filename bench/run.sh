#!/usr/bin/env bash
# Sluice benchmark harness (issue #3). See bench/README.md.
#
# One command: starts an nginx upstream (static chat completion JSON, a
# static SSE stream and an upload sink that reads whole request bodies), a
# paced SSE mock (python3), an nginx proxy_pass baseline
# and one Sluice process per Sluice case, pins them to cores, runs wrk against
# each case, measures RSS, prints a table and writes bench/results/*.json|md.
#
# Env: DURATION (10s) CONNECTIONS (64) THREADS (1) CASES (all; comma list)
#      IDLE_CONNS (10000; 0 skips) WARMUP (2s) C1_DURATION (=DURATION)
#      TTFT_REQUESTS (200) SSE_EVENTS (20) SSE_INTERVAL_MS (5)
#      SUT_CPU (0) LOAD_CPU (1) SLUICE_BIN (build/sluice) SLUICE_BUILD (1)
#      RESULTS_DIR (bench/results) KEEP_TMP (0) NOTE (free text for the results)
#      NGINX_UPLOAD_BUFFER (nginx's default; client_body_buffer_size of the nginx-upload* baseline)
#      STREAM_LEVELS (100,1000,3000) STREAM_EVENTS (20) STREAM_INTERVAL_MS (50) STREAM_UNIQUE (1): the streams-*
#      memory cases
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LIB=$HERE/lib

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
CASES=${CASES:-all}
IDLE_CONNS=${IDLE_CONNS:-10000}
WARMUP=${WARMUP:-2s}
C1_DURATION=${C1_DURATION:-$DURATION}
TTFT_REQUESTS=${TTFT_REQUESTS:-200}
SSE_EVENTS=${SSE_EVENTS:-20}
SSE_INTERVAL_MS=${SSE_INTERVAL_MS:-5}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
SLUICE_BUILD=${SLUICE_BUILD:-1}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KEEP_TMP=${KEEP_TMP:-0}
NOTE=${NOTE:-}
# client_body_buffer_size of the nginx upload baseline; empty keeps nginx's default (two pages: 8k on x86-64).
# With proxy_request_buffering off it is the size of every read from the client and write to the upstream.
NGINX_UPLOAD_BUFFER=${NGINX_UPLOAD_BUFFER:-}
# streams-* cases: concurrent SSE streams held at once, and the paced upstream they read (events, gap)
STREAM_LEVELS=${STREAM_LEVELS:-100,1000,3000}
STREAM_EVENTS=${STREAM_EVENTS:-20}
STREAM_INTERVAL_MS=${STREAM_INTERVAL_MS:-50}
# every stream's answer with an id of its own, as a provider's (sse_mock.py --unique-ids): STREAM_UNIQUE=0 gives
# every stream the same bytes, as before 2026-12-02 (LuaJIT interns strings: identical events are stored once)
STREAM_UNIQUE=${STREAM_UNIQUE:-1}
STREAM_IDS=$([[ $STREAM_UNIQUE == 1 ]] && echo --unique-ids || true)
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}

# The plugin chain of the sluice-ai-full cases: YAML lines "name: {conf}",
# one plugin per line, placed before ai-proxy in the route's plugins map.
# Add plugins here as they land; a plugin the gateway does not know makes
# `sluice -t` fail and the case is reported as skipped, not failed.
AI_FULL_PLUGINS=${AI_FULL_PLUGINS:-'ai-prompt-decorator: {prepend: [{role: system, content: "Answer briefly."}], append: [{role: user, content: "Reply in English."}]}'}

# ---------------------------------------------------------------- helpers
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 2; }

secs() { # "10s" "1m" "500ms" "7" -> whole seconds (>= 1)
  local v=$1
  case $v in
    *ms) v=$(( ${v%ms} / 1000 ));;
    *s) v=${v%s};;
    *m) v=$(( ${v%m} * 60 ));;
    *h) v=$(( ${v%h} * 3600 ));;
  esac
  [[ $v =~ ^[0-9]+$ ]] || die "bad duration: $1"
  (( v < 1 )) && v=1
  echo "$v"
}

for tool in "$NGINX" "$WRK" taskset python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
DUR_S=$(secs "$DURATION"); C1_S=$(secs "$C1_DURATION")
WARM_S=0; [[ $WARMUP != 0 && $WARMUP != 0s ]] && WARM_S=$(secs "$WARMUP")

NCPU=$(nproc)
if (( NCPU < 2 )); then
  log "only $NCPU CPU: everything shares core 0 (numbers are not comparable to 2-core runs)"
  SUT_CPU=0; LOAD_CPU=0
fi

TMP=$(mktemp -d -t sluice-bench.XXXXXX)
PIDS=()
SAMPLER=""
cleanup() {
  local rc=$?
  set +e   # cleanup must run to the end
  trap - EXIT INT TERM
  local p
  if [[ -n ${SAMPLER:-} ]]; then kill "$SAMPLER" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
      kill -0 "$p" 2>/dev/null || break; sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ $KEEP_TMP == 1 ]]; then log "kept temp dir $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pid() { # stop one process we started and forget it
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  local keep=() q
  for q in "${PIDS[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

# Raise the fd limit for us and everything we start (idle-connection test).
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE" 2>/dev/null || true
NOFILE=$(ulimit -n)
# The gateway keeps max_connections within half the limit (a proxied connection holds two descriptors) and
# answers 503 past it, so the idle connections must fit in that half.
if (( IDLE_CONNS > 0 && 2 * IDLE_CONNS + 400 > NOFILE )); then
  log "IDLE_CONNS=$IDLE_CONNS needs more fds than ulimit -n $NOFILE allows; using $(((NOFILE - 400) / 2))"
  IDLE_CONNS=$(((NOFILE - 400) / 2))
fi

# Everything this script runs without an explicit pin (curl, python clients,
# samplers) stays off the server-under-test's core.
taskset -p -c "$LOAD_CPU" $$ >/dev/null

free_ports() { # N free TCP ports on 127.0.0.1 (bound and released together)
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() { # port pid timeout_s -> 0 when something accepts on the port
  local port=$1 pid=$2 t=$(( $3 * 10 )) i
  for ((i = 0; i < t; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

rss_kb() { # VmRSS of a process plus its direct children (nginx master+workers)
  local pid=$1 total=0 kids v c
  v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  total=$(( total + ${v:-0} ))
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
  for c in $kids; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

start_sampler() { # pid outfile -> samples RSS every 200 ms until stopped, keeps the max
  local pid=$1 out=$2
  ( max=0; n=0
    while kill -0 "$pid" 2>/dev/null && (( n < 36000 )); do
      v=$(rss_kb "$pid"); (( v > max )) && max=$v; echo "$max" >"$out"
      n=$((n + 1)); sleep 0.2
    done ) &
  SAMPLER=$!
}

# ---------------------------------------------------------------- payloads
nginx_str() { # file -> contents as an nginx single-quoted string body
  python3 - "$1" <<'EOF'
import sys
s = open(sys.argv[1]).read()
print(s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n"), end="")
EOF
}
COMPLETION=$(nginx_str "$LIB/payloads/completion.json")
SSE_BODY=$(nginx_str "$LIB/payloads/stream.sse")
CHAT_BODY=$LIB/payloads/chat.json
CHAT4K_BODY=$LIB/payloads/chat-4k.json # a 4 KB prompt with an e-mail, a phone, a card, an IBAN, an IP in it
STREAM_BODY=$LIB/payloads/chat-stream.json
# Upload bodies (the *-upload cases): 1 MiB, over Sluice's default node.limits.body_buffer_size (64k), so it
# streams to the upstream as it arrives; 16 KiB, under it, so it is read whole first. Made here, not stored.
UPLOAD_BODY=$TMP/upload-1m.bin
UPLOAD16K_BODY=$TMP/upload-16k.bin
python3 - "$UPLOAD_BODY" 1048576 "$UPLOAD16K_BODY" 16384 <<'EOF'
import sys
line = bytes(33 + (i * 7) % 94 for i in range(255)) + b"\n"   # 256 printable bytes
for path, size in zip(sys.argv[1::2], sys.argv[2::2]):
    with open(path, "wb") as f:
        f.write((line * (int(size) // 256 + 1))[:int(size)])
EOF

read -r U_JSON U_SSE U_PACED P_JSON P_SSE P_PACED U_TLS P_TLS U_UPLOAD U_SINK P_UPLOAD U_STREAMS P_STREAMS P_JSON_LOG \
  <<<"$(free_ports 14)"

# ---------------------------------------------------------------- upstream nginx (LOAD_CPU)
mkdir -p "$TMP/up" "$TMP/proxy" "$TMP/res" "$TMP/bin"
# Run nginx under its own name (process name "bench-nginx"), so a `killall nginx`
# or `pkill nginx` elsewhere on the machine does not take the harness down.
ln -s "$(command -v "$NGINX")" "$TMP/bin/bench-nginx"
NGINX_RUN=$TMP/bin/bench-nginx
# HTTPS upstream (the *-tls cases): a certificate for localhost, trusted through ca_file; every request it
# serves logs its connection number, so the harness can show TLS connection reuse (handshakes vs requests).
mkdir -p "$TMP/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/tls/key.pem" \
  -out "$TMP/tls/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1 ||
  die "openssl could not make the test certificate"
cat >"$TMP/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/up/body;
  proxy_temp_path $TMP/up/proxy;
  fastcgi_temp_path $TMP/up/fcgi;
  uwsgi_temp_path $TMP/up/uwsgi;
  scgi_temp_path $TMP/up/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$U_JSON backlog=4096;
    location / { default_type application/json; return 200 '$COMPLETION'; }
  }
  server {
    listen 127.0.0.1:$U_SSE backlog=4096;
    location / { default_type text/event-stream; add_header Cache-Control no-cache; return 200 '$SSE_BODY'; }
  }
  # Upload sink: nginx's own 'return' answers before it has read the body (it discards the rest afterwards),
  # so the upload port proxies instead: request buffering (the default) makes nginx read the whole body into
  # memory (client_body_buffer_size) before it passes a bodyless request to the sink, which answers 200 with
  # the byte count (the Content-Length nginx just read in full). A short body never gets a 200.
  upstream up_sink { server 127.0.0.1:$U_SINK; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$U_UPLOAD backlog=4096;
    client_max_body_size 16m; client_body_buffer_size 16m;   # bodies up to 16m stay in memory
    location / {
      proxy_pass http://up_sink; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header X-Body-Bytes \$content_length;
    }
  }
  server {
    listen 127.0.0.1:$U_SINK backlog=4096;
    location / { default_type application/json; return 200 '{"ok":true,"body_bytes":\$http_x_body_bytes}'; }
  }
  log_format conn '\$connection';
  server {
    listen 127.0.0.1:$U_TLS ssl backlog=4096;
    ssl_certificate $TMP/tls/cert.pem; ssl_certificate_key $TMP/tls/key.pem; ssl_protocols TLSv1.2;
    access_log $TMP/up/tls.log conn;
    location / { default_type application/json; return 200 '$COMPLETION'; }
  }
}
EOF
"$NGINX" -t -q -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf" || die "upstream nginx config invalid"
taskset -c "$LOAD_CPU" "$NGINX_RUN" -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf" </dev/null &
UP_PID=$!; PIDS+=("$UP_PID")
wait_port "$U_JSON" "$UP_PID" 10 || die "upstream nginx did not start ($(tail -3 "$TMP/up/error.log"))"

taskset -c "$LOAD_CPU" python3 "$LIB/sse_mock.py" --port "$U_PACED" --events "$SSE_EVENTS" \
  --interval-ms "$SSE_INTERVAL_MS" --first-ms "$SSE_INTERVAL_MS" </dev/null >"$TMP/sse_mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_port "$U_PACED" "$MOCK_PID" 10 || die "paced SSE mock did not start ($(cat "$TMP/sse_mock.log"))"
# the streams-* cases: long streams (STREAM_EVENTS events STREAM_INTERVAL_MS apart), many at once
taskset -c "$LOAD_CPU" python3 "$LIB/sse_mock.py" --port "$U_STREAMS" --events "$STREAM_EVENTS" \
  --interval-ms "$STREAM_INTERVAL_MS" --first-ms "$STREAM_INTERVAL_MS" $STREAM_IDS </dev/null >"$TMP/streams_mock.log" 2>&1 &
SMOCK_PID=$!; PIDS+=("$SMOCK_PID")
wait_port "$U_STREAMS" "$SMOCK_PID" 10 || die "streams SSE mock did not start ($(cat "$TMP/streams_mock.log"))"

# ---------------------------------------------------------------- nginx proxy_pass baseline (SUT_CPU)
cat >"$TMP/proxy/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/proxy/nginx.pid;
error_log $TMP/proxy/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE - 100 )); }
http {
  access_log off;
  client_body_temp_path $TMP/proxy/body;
  proxy_temp_path $TMP/proxy/proxy;
  fastcgi_temp_path $TMP/proxy/fcgi;
  uwsgi_temp_path $TMP/proxy/uwsgi;
  scgi_temp_path $TMP/proxy/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream up_json  { server 127.0.0.1:$U_JSON;  keepalive 64; keepalive_requests 100000000; }
  upstream up_sse   { server 127.0.0.1:$U_SSE;   keepalive 64; keepalive_requests 100000000; }
  upstream up_paced { server 127.0.0.1:$U_PACED; keepalive 64; keepalive_requests 100000000; }
  upstream up_tls   { server 127.0.0.1:$U_TLS;   keepalive 64; keepalive_requests 100000000; }
  upstream up_upload { server 127.0.0.1:$U_UPLOAD; keepalive 64; keepalive_requests 100000000; }
  upstream up_streams { server 127.0.0.1:$U_STREAMS; keepalive 64; keepalive_requests 100000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server { listen 127.0.0.1:$P_JSON backlog=4096;  location / { proxy_pass http://up_json; } }
  server { listen 127.0.0.1:$P_SSE backlog=4096;   location / { proxy_pass http://up_sse;   proxy_buffering off; } }
  server { listen 127.0.0.1:$P_PACED backlog=4096; location / { proxy_pass http://up_paced; proxy_buffering off; } }
  server { listen 127.0.0.1:$P_TLS backlog=4096;   location / { proxy_pass https://up_tls; proxy_ssl_session_reuse on;
           proxy_ssl_server_name on; proxy_ssl_name localhost; } }
  server { listen 127.0.0.1:$P_UPLOAD backlog=4096; client_max_body_size 16m;${NGINX_UPLOAD_BUFFER:+ client_body_buffer_size $NGINX_UPLOAD_BUFFER;}
           location / { proxy_pass http://up_upload; proxy_request_buffering off; } }
  server { listen 127.0.0.1:$P_STREAMS backlog=4096; location / { proxy_pass http://up_streams; proxy_buffering off; } }
  # the *-log cases: the combined format to a file, buffered as Sluice buffers its access log
  server { listen 127.0.0.1:$P_JSON_LOG backlog=4096; access_log $TMP/proxy/access.log combined buffer=64k flush=1s;
           location / { proxy_pass http://up_json; } }
}
EOF
"$NGINX" -t -q -p "$TMP/proxy" -e "$TMP/proxy/error.log" -c "$TMP/proxy/nginx.conf" || die "proxy nginx config invalid"

NGX_PID=""
start_nginx_proxy() {
  taskset -c "$SUT_CPU" "$NGINX_RUN" -p "$TMP/proxy" -e "$TMP/proxy/error.log" -c "$TMP/proxy/nginx.conf" </dev/null &
  NGX_PID=$!; PIDS+=("$NGX_PID")
  wait_port "$P_JSON" "$NGX_PID" 10 || die "nginx proxy did not start ($(tail -3 "$TMP/proxy/error.log"))"
  sleep 0.3
}

# ---------------------------------------------------------------- sluice
SLUICE_STATE=unknown   # ok | missing (reason in SLUICE_REASON)
SLUICE_REASON=""
SLUICE_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
SLUICE_DIRTY=$(git -C "$ROOT" status --porcelain -- core lua plugins CMakeLists.txt 2>/dev/null | head -1)
[[ -n $SLUICE_DIRTY ]] && SLUICE_COMMIT="$SLUICE_COMMIT+dirty"

ensure_sluice() {
  [[ $SLUICE_STATE != unknown ]] && return 0
  local tried=0
  if [[ ! -x $SLUICE_BIN && $SLUICE_BUILD == 1 && $SLUICE_BIN == "$ROOT/build/sluice" ]]; then
    tried=1
    log "building sluice (Release) into $ROOT/build ..."
    if ! { cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release &&
           cmake --build "$ROOT/build" -j2; } >"$TMP/build.log" 2>&1; then
      cp "$TMP/build.log" "$RESULTS_DIR/last-build.log" 2>/dev/null || true
      log "sluice build failed; last lines:"; tail -5 "$TMP/build.log" >&2 || true
    fi
  fi
  if [[ -x $SLUICE_BIN ]]; then
    SLUICE_STATE=ok
  else
    SLUICE_STATE=missing
    SLUICE_REASON="sluice binary not available at $SLUICE_BIN"
    if [[ $tried == 1 ]]; then
      SLUICE_REASON="$SLUICE_REASON (cmake build failed: $(grep -m1 -E 'error|Error' "$TMP/build.log" | head -c 200))"
    fi
  fi
}

# The client key of the ai-limits cases (sent by wrk and the probe with the chat-key workload).
BENCH_KEY=bench-client-key-0123456789
MC_PORT=""
ensure_memcached() { # one memcached for the *-mc cases, on the load core
  [[ -n $MC_PORT ]] && return 0
  local bin=${MEMCACHED:-/usr/bin/memcached} user=() pid
  [[ -x $bin ]] || die "missing tool: memcached ($bin)"
  [[ $(id -u) == 0 ]] && user=(-u root)
  MC_PORT=$(free_ports 1)
  taskset -c "$LOAD_CPU" "$bin" -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 64 -t 1 "${user[@]}" >"$TMP/memcached.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_port "$MC_PORT" "$pid" 5 || die "memcached did not start: $(tail -2 "$TMP/memcached.log")"
}

sluice_config() { # kind listen_port target_port out   (kind NAME-log: NAME with the default access log to a file)
  local kind=$1 port=$2 target=$3 out=$4 alog=off
  if [[ $kind == *-log ]]; then kind=${kind%-log}; alog=${out%.yaml}-access.log; fi
  [[ $kind == ai-limits-mc || $kind == cache-l2 ]] && ensure_memcached
  {
    cat <<EOF
node:
  listen: ["127.0.0.1:$port"]
  workers: 1
  log_level: warn
  access_log: {path: "$alog"}
EOF
    [[ $kind == cache* ]] && echo "  shared_dicts: {ai-cache: 256m}"
    [[ $kind == ai-limits-mc || $kind == cache-l2 ]] && printf '  memcached: {servers: ["127.0.0.1:%s"]}\n' "$MC_PORT"
    case $kind in
      plain)
        cat <<EOF
upstreams:
  up: {nodes: ["127.0.0.1:$target"], keepalive: {size: 64}}
routes:
  - id: plain
    paths: ["/*"]
    upstream: up
EOF
        ;;
      plain-tls)
        cat <<EOF
upstreams:
  up: {scheme: https, nodes: ["localhost:$target"], tls: {ca_file: "$TMP/tls/cert.pem"}, keepalive: {size: 64}}
routes:
  - id: plain
    paths: ["/*"]
    upstream: up
EOF
        ;;
      ai|ai-full|ai-prom|ai-obs)
        cat <<EOF
providers:
  bench:
    kind: openai-compatible
    endpoint: "http://127.0.0.1:$target"
    api_key: "x"
    models: {gpt-4o-mini: gpt-4o-mini}
routes:
  - id: chat
    paths: ["/v1/chat/completions"]
    plugins:
EOF
        if [[ $kind == ai-full ]]; then
          while IFS= read -r line; do
            [[ -n ${line// /} ]] && printf '      %s\n' "$line"
          done <<<"$AI_FULL_PLUGINS"
        fi
        if [[ $kind == ai-prom || $kind == ai-obs ]]; then
          echo "      prometheus: {}"
        fi
        if [[ $kind == ai-obs ]]; then
          # every trace sampled, sent to a collector that is up (the upstream nginx answers 200 to any POST);
          # the audit log to a file
          echo "      opentelemetry: {endpoint: \"http://127.0.0.1:$target/v1/traces\", sampling: {ratio: 1.0}}"
          echo "      ai-audit-log: {file: {path: \"${out%.yaml}-audit.log\"}}"
        fi
        echo "      ai-proxy: {provider: bench}"
        ;;
      cache|cache-l2|ai-safety|ai-moderation)
        # ai-cache (docs/caching.md): every request of the chat workload is the same one, so all but the first are
        # hits (L1: this node's shared dict; cache-l2: L1 off, memcached); chat-unique makes every one a miss.
        # The content-safety plugins (docs/ai-prompt-guard.md, ai-pii.md, ai-moderation.md): ai-safety is
        # ai-prompt-guard (injection rules) + ai-pii (every detector, placeholders); ai-moderation local categories
        cat <<EOF
providers:
  bench:
    kind: openai-compatible
    endpoint: "http://127.0.0.1:$target"
    api_key: "x"
    models: {gpt-4o-mini: gpt-4o-mini}
routes:
  - id: chat
    paths: ["/v1/chat/completions"]
    plugins:
      ai-proxy: {provider: bench}
EOF
        if [[ $kind == cache ]]; then
          echo "      ai-cache: {scope: global, l1: true}"
        elif [[ $kind == cache-l2 ]]; then
          echo "      ai-cache: {scope: global, l1: false}"
        elif [[ $kind == ai-safety ]]; then
          cat <<'EOF'
      ai-prompt-guard:
        deny:
          - {name: injection, pattern: 'ignore (all|any|the) (previous|prior|above) (instructions|rules)', flags: i}
          - {name: system-prompt, pattern: '(reveal|print|show) (your|the) (system prompt|instructions)', flags: i}
          - {name: jailbreak, pattern: '\b(DAN|developer mode|jailbreak)\b'}
      ai-pii: {detectors: [all]}
EOF
        else
          cat <<'EOF'
      ai-moderation:
        categories:
          - {name: violence, keywords: [kill, murder, bomb, shoot, stab, massacre, assault], patterns: ['\bblow(ing)? up\b']}
          - {name: self-harm, keywords: [suicide, self-harm, cut myself]}
          - {name: profanity, keywords: [damn, crap], action: flag}
EOF
        fi
        ;;
      ai-limits|ai-limits-mc)
        # key-auth and ai-rate-limit with limits a run never reaches (a token limit per minute and one per day),
        # counters in the shared dict or in memcached (started by this script, pinned to the load core)
        local policy=local
        [[ $kind == ai-limits-mc ]] && policy=memcached
        cat <<EOF
consumers:
  - {name: bench, keys: ["$BENCH_KEY"]}
providers:
  bench:
    kind: openai-compatible
    endpoint: "http://127.0.0.1:$target"
    api_key: "x"
    models: {gpt-4o-mini: gpt-4o-mini}
routes:
  - id: chat
    paths: ["/v1/chat/completions"]
    plugins:
      key-auth: {}
      ai-proxy: {provider: bench}
      ai-rate-limit:
        policy: $policy
        limits:
          - {metric: total_tokens, limit: 1000000000000, window: 1m}
          - {metric: total_tokens, limit: 1000000000000, window: 1d}
EOF
        ;;
      ai-multi1|ai-multi3)
        # ai-proxy-multi: one target, or three weighted targets (same upstream, so only routing differs)
        cat <<EOF
providers:
  bench1: {kind: openai-compatible, endpoint: "http://127.0.0.1:$target", api_key: "x", models: {gpt-4o-mini: gpt-4o-mini}}
  bench2: {kind: openai-compatible, endpoint: "http://127.0.0.1:$target", api_key: "x", models: {gpt-4o-mini: gpt-4o-mini}}
  bench3: {kind: openai-compatible, endpoint: "http://127.0.0.1:$target", api_key: "x", models: {gpt-4o-mini: gpt-4o-mini}}
routes:
  - id: chat
    paths: ["/v1/chat/completions"]
    plugins:
EOF
        if [[ $kind == ai-multi1 ]]; then
          echo "      ai-proxy-multi: {targets: [{provider: bench1}]}"
        else
          echo "      ai-proxy-multi: {strategy: weighted, targets: [{provider: bench1, weight: 5}, {provider: bench2, weight: 3}, {provider: bench3, weight: 2}]}"
        fi
        ;;
    esac
  } >"$out"
}

# ---------------------------------------------------------------- cases
# name | server (direct|nginx|sluice:KIND) | workload (get|tls|chat|stream|upload|upload16k|ttft) | baseline | direct
CASE_TABLE="
direct|direct|get|nginx|direct
nginx|nginx|get|nginx|direct
sluice-plain|sluice:plain|get|nginx|direct
nginx-log|nginx|get-log|nginx-log|direct
sluice-plain-log|sluice:plain-log|get-log|nginx-log|direct
nginx-tls|nginx|tls|nginx-tls|direct
sluice-plain-tls|sluice:plain-tls|tls|nginx-tls|direct
direct-chat|direct|chat|nginx-chat|direct-chat
nginx-chat|nginx|chat|nginx-chat|direct-chat
sluice-ai|sluice:ai|chat|nginx-chat|direct-chat
sluice-ai-full|sluice:ai-full|chat|nginx-chat|direct-chat
sluice-ai-prom|sluice:ai-prom|chat|nginx-chat|direct-chat
sluice-ai-obs|sluice:ai-obs|chat|nginx-chat|direct-chat
nginx-chat-log|nginx|chat-log|nginx-chat-log|direct-chat
sluice-ai-log|sluice:ai-log|chat-log|nginx-chat-log|direct-chat
sluice-cache-hit|sluice:cache|chat|nginx-chat|direct-chat
sluice-cache-l2|sluice:cache-l2|chat|nginx-chat|direct-chat
sluice-ai-unique|sluice:ai|chat-unique|nginx-chat|direct-chat
sluice-cache-miss|sluice:cache|chat-unique|nginx-chat|direct-chat
sluice-ai-key|sluice:ai|chat-key|nginx-chat|direct-chat
sluice-ai-limits|sluice:ai-limits|chat-key|nginx-chat|direct-chat
sluice-ai-limits-mc|sluice:ai-limits-mc|chat-key|nginx-chat|direct-chat
sluice-ai-multi1|sluice:ai-multi1|chat|nginx-chat|direct-chat
nginx-chat4k|nginx|chat4k|nginx-chat4k|direct-chat
sluice-ai-4k|sluice:ai|chat4k|nginx-chat4k|direct-chat
sluice-ai-safety-4k|sluice:ai-safety|chat4k|sluice-ai-4k|direct-chat
sluice-ai-multi3|sluice:ai-multi3|chat|nginx-chat|direct-chat
direct-stream|direct|stream|nginx-stream|direct-stream
nginx-stream|nginx|stream|nginx-stream|direct-stream
sluice-plain-stream|sluice:plain|stream|nginx-stream|direct-stream
sluice-ai-stream|sluice:ai|stream|nginx-stream|direct-stream
sluice-ai-full-stream|sluice:ai-full|stream|nginx-stream|direct-stream
sluice-ai-moderation-stream|sluice:ai-moderation|stream|sluice-ai-stream|direct-stream
sluice-ai-obs-stream|sluice:ai-obs|stream|nginx-stream|direct-stream
direct-upload|direct|upload|nginx-upload|direct-upload
nginx-upload|nginx|upload|nginx-upload|direct-upload
sluice-plain-upload|sluice:plain|upload|nginx-upload|direct-upload
direct-upload16k|direct|upload16k|nginx-upload16k|direct-upload16k
nginx-upload16k|nginx|upload16k|nginx-upload16k|direct-upload16k
sluice-plain-upload16k|sluice:plain|upload16k|nginx-upload16k|direct-upload16k
ttft-direct|direct|ttft|ttft-nginx|ttft-direct
ttft-nginx|nginx|ttft|ttft-nginx|ttft-direct
ttft-sluice-plain|sluice:plain|ttft|ttft-nginx|ttft-direct
ttft-sluice-ai|sluice:ai|ttft|ttft-nginx|ttft-direct
ttft-sluice-ai-moderation|sluice:ai-moderation|ttft|ttft-sluice-ai|ttft-direct
streams-nginx|nginx|streams|streams-nginx|streams-nginx
streams-sluice-plain|sluice:plain|streams|streams-nginx|streams-nginx
streams-sluice-ai|sluice:ai|streams|streams-nginx|streams-nginx
"

want_case() {
  [[ $CASES == all ]] && return 0
  [[ ,$CASES, == *,$1,* ]]
}
if [[ $CASES != all ]]; then
  IFS=, read -ra _wanted <<<"$CASES"
  for c in "${_wanted[@]}"; do
    grep -q "^$c|" <<<"$CASE_TABLE" || die "unknown case '$c' (known: $(cut -d'|' -f1 <<<"$CASE_TABLE" | xargs | tr ' ' ,))"
  done
fi

workload_port() { # workload server -> port to hit for direct / nginx
  case "$2:$1" in
    nginx:get-log|nginx:chat-log) echo "$P_JSON_LOG";;
    direct:*-log) workload_port "${1%-log}" "$2";;
    nginx:streams) echo "$P_STREAMS";;
    direct:get|direct:chat|direct:chat-unique|direct:chat4k) echo "$U_JSON";;
    direct:stream) echo "$U_SSE";;
    direct:ttft) echo "$U_PACED";;
    direct:upload|direct:upload16k) echo "$U_UPLOAD";;
    nginx:get|nginx:chat|nginx:chat-unique|nginx:chat4k) echo "$P_JSON";;
    nginx:stream) echo "$P_SSE";;
    nginx:ttft) echo "$P_PACED";;
    nginx:tls) echo "$P_TLS";;
    nginx:upload|nginx:upload16k) echo "$P_UPLOAD";;
  esac
}
workload_target() { # upstream port a sluice case proxies to
  case ${1%-log} in
    streams) echo "$U_STREAMS";;
    get|chat|chat-unique|chat-key|chat4k) echo "$U_JSON";; stream) echo "$U_SSE";; ttft) echo "$U_PACED";; tls) echo "$U_TLS";;
    upload|upload16k) echo "$U_UPLOAD";;
  esac
}
workload_path() { case ${1%-log} in get|tls) echo /static/chat.json;; upload*) echo /v1/files/upload;; *) echo /v1/chat/completions;; esac; }
workload_body() {
  case ${1%-log} in
    get|tls) echo "";; chat|chat-unique|chat-key) echo "$CHAT_BODY";; chat4k) echo "$CHAT4K_BODY";;
    upload) echo "$UPLOAD_BODY";; upload16k) echo "$UPLOAD16K_BODY";;
    *) echo "$STREAM_BODY";;
  esac
}
workload_ctype() { case $1 in upload*) echo application/octet-stream;; *) echo application/json;; esac; }
workload_auth() { case $1 in chat-key) echo "Bearer $BENCH_KEY";; *) echo "";; esac; } # Authorization header
body_bytes() { # workload -> request body size in bytes (0 without a body)
  local body; body=$(workload_body "$1")
  if [[ -n $body ]]; then wc -c <"$body" | tr -d ' '; else echo 0; fi
}

probe() { # port workload -> prints HTTP status (000 on connection failure); body in $TMP/probe.body
  local port=$1 wl=$2 body
  body=$(workload_body "$wl")
  local args=(-s -o "$TMP/probe.body" -w '%{http_code}' --max-time 10)
  # no "Expect: 100-continue" (curl adds it to large bodies): send what wrk sends
  [[ -n $body ]] && args+=(-X POST -H "Content-Type: $(workload_ctype "$wl")" -H 'Expect:' --data-binary "@$body")
  [[ -n $(workload_auth "$wl") ]] && args+=(-H "Authorization: $(workload_auth "$wl")")
  curl "${args[@]}" "http://127.0.0.1:$port$(workload_path "$wl")" || true
}

run_wrk() { # port workload threads conns dur_s out
  local port=$1 wl=$2 t=$3 c=$4 d=$5 out=$6 body
  body=$(workload_body "$wl")
  BENCH_METHOD=$([[ -n $body ]] && echo POST || echo GET) BENCH_BODY_FILE=$body BENCH_CTYPE=$(workload_ctype "$wl") \
    BENCH_UNIQUE=$([[ $wl == chat-unique ]] && echo 1 || echo 0) \
    BENCH_AUTH=$(workload_auth "$wl") \
    timeout $(( d + 30 )) taskset -c "$LOAD_CPU" "$WRK" -t"$t" -c"$c" -d"${d}s" --timeout 5s --latency \
    -s "$LIB/wrk_report.lua" "http://127.0.0.1:$port$(workload_path "$wl")" >"$out" 2>&1 || true
}

json_of() { # file with a BENCH_JSON line -> the JSON (or null)
  local j
  j=$(grep -m1 '^BENCH_JSON ' "$1" 2>/dev/null | cut -d' ' -f2- || true)
  echo "${j:-null}"
}

jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

write_case() { # name server workload baseline direct status reason load c1 rss_idle rss_load idle_json streams_json
  cat >"$TMP/res/$1.json" <<EOF
{"name": $(jstr "$1"), "server": $(jstr "$2"), "workload": $(jstr "$3"), "baseline": $(jstr "$4"),
 "direct": $(jstr "$5"), "status": $(jstr "$6"), "reason": $(jstr "$7"),
 "load": ${8:-null}, "c1": ${9:-null}, "rss_idle_kb": ${10:-null}, "rss_load_max_kb": ${11:-null},
 "idle_conns": ${12:-null}, "streams": ${13:-null}, "body_bytes": $(body_bytes "$3")}
EOF
  echo "$1" >>"$TMP/res/order"
}

idle_conns_test() { # port pid -> JSON {"conns","opened","failed","rss_kb","rss_before_kb"}
  local port=$1 pid=$2 out=$TMP/idle.out before after i cpid ready=""
  (( IDLE_CONNS > 0 )) || { echo null; return; }
  before=$(rss_kb "$pid")
  python3 "$LIB/idle_conns.py" --port "$port" --conns "$IDLE_CONNS" --hold-seconds 120 </dev/null >"$out" 2>&1 &
  cpid=$!; PIDS+=("$cpid")
  for ((i = 0; i < 1200; i++)); do  # <= 120 s
    ready=$(grep -m1 '^READY ' "$out" 2>/dev/null | cut -d' ' -f2- || true)
    [[ -n $ready ]] && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  after=$(rss_kb "$pid")
  stop_pid "$cpid"
  [[ -n $ready ]] || { log "idle-connection client failed: $(tail -2 "$out")"; ready=null; }
  echo "{\"conns\": $IDLE_CONNS, \"rss_before_kb\": $before, \"rss_kb\": $after, \"client\": $ready}"
}

# streams-* cases: for each of STREAM_LEVELS, that many streams at once (lib/streams.py), the server's peak
# RSS meanwhile (and its RSS before each level) -> JSON list
streams_levels() { # port pid workload
  local port=$1 spid=$2 wl=$3 n out first=1 before peak res
  printf '['
  IFS=, read -ra _levels <<<"$STREAM_LEVELS"
  for n in "${_levels[@]}"; do
    out=$TMP/streams.$n
    sleep 1
    before=$(rss_kb "$spid")
    log "  $n concurrent streams"
    start_sampler "$spid" "$out.rss"
    taskset -c "$LOAD_CPU" timeout 150 python3 "$LIB/streams.py" --port "$port" --path "$(workload_path "$wl")" \
      --body-file "$(workload_body "$wl")" --streams "$n" --max-seconds 120 >"$out" 2>&1 || true
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    peak=$(cat "$out.rss" 2>/dev/null || true)
    [[ -n $peak ]] || peak=$(rss_kb "$spid")
    res=$(tail -1 "$out"); [[ $res == \{* ]] || { log "streams client: $(tail -2 "$out")"; res=null; }
    (( first )) || printf ','
    first=0
    printf '{"level": %d, "rss_before_kb": %s, "rss_peak_kb": %s, "client": %s}' "$n" "$before" "${peak:-null}" "$res"
  done
  printf ']'
}

# measure one case against a server already listening on $port (pid $spid, or "" for direct)
measure() { # name server workload baseline direct port spid do_idle
  local name=$1 server=$2 wl=$3 base=$4 dir=$5 port=$6 spid=$7 do_idle=$8
  local st load c1 rss_idle=null rss_load=null idle=null reason=""
  [[ $wl == tls ]] && : >"$TMP/up/tls.log"
  st=$(probe "$port" "$wl")
  if [[ $server == sluice:* && ( $st == 404 || $st == 500 || $st == 501 ) ]]; then
    reason="gateway answered $st to the probe request: $(head -c 200 "$TMP/probe.body" | tr -d '\n')"
    log "$name: skipped ($reason)"
    write_case "$name" "$server" "$wl" "$base" "$dir" skipped "$reason"
    return
  fi
  if [[ $st != 2?? ]]; then
    reason="probe request got HTTP $st: $(head -c 200 "$TMP/probe.body" 2>/dev/null | tr -d '\n')"
    log "$name: FAILED ($reason)"
    write_case "$name" "$server" "$wl" "$base" "$dir" failed "$reason"
    return
  fi
  if [[ $wl == upload* ]] && ! grep -q "\"body_bytes\":$(body_bytes "$wl")}" "$TMP/probe.body"; then
    reason="upload sink did not get the whole body ($(body_bytes "$wl") bytes): $(head -c 200 "$TMP/probe.body" | tr -d '\n')"
    log "$name: FAILED ($reason)"
    write_case "$name" "$server" "$wl" "$base" "$dir" failed "$reason"
    return
  fi
  [[ -n $spid ]] && rss_idle=$(rss_kb "$spid")
  if [[ $wl == streams ]]; then
    local streams
    streams=$(streams_levels "$port" "$spid" "$wl")
    st=ok
    if ! kill -0 "$spid" 2>/dev/null; then st=failed; reason="server process died during the run"; fi
    write_case "$name" "$server" "$wl" "$base" "$dir" "$st" "$reason" null null "$rss_idle" null null "$streams"
    return
  fi
  if [[ $wl == ttft ]]; then
    local body; body=$(workload_body "$wl")
    log "$name: ttft concurrency 1, $TTFT_REQUESTS requests"
    taskset -c "$LOAD_CPU" timeout 120 python3 "$LIB/ttft.py" --port "$port" --path "$(workload_path "$wl")" \
      --body-file "$body" --requests "$TTFT_REQUESTS" --concurrency 1 --max-seconds 60 >"$TMP/$name.c1" 2>&1 || true
    c1=$(json_of "$TMP/$name.c1")
    local cc=$(( CONNECTIONS < 16 ? CONNECTIONS : 16 ))
    log "$name: ttft concurrency $cc"
    [[ -n $spid ]] && start_sampler "$spid" "$TMP/$name.rss"
    taskset -c "$LOAD_CPU" timeout 120 python3 "$LIB/ttft.py" --port "$port" --path "$(workload_path "$wl")" \
      --body-file "$body" --requests $(( TTFT_REQUESTS * 2 )) --concurrency "$cc" --max-seconds 60 >"$TMP/$name.load" 2>&1 || true
    load=$(json_of "$TMP/$name.load")
  else
    if (( WARM_S > 0 )); then
      log "$name: warmup ${WARM_S}s"
      run_wrk "$port" "$wl" "$THREADS" "$CONNECTIONS" "$WARM_S" "$TMP/$name.warm"
    fi
    log "$name: load -t$THREADS -c$CONNECTIONS -d${DUR_S}s"
    [[ -n $spid ]] && start_sampler "$spid" "$TMP/$name.rss"
    run_wrk "$port" "$wl" "$THREADS" "$CONNECTIONS" "$DUR_S" "$TMP/$name.load"
    load=$(json_of "$TMP/$name.load")
  fi
  if [[ -n $spid ]]; then
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    rss_load=$(cat "$TMP/$name.rss" 2>/dev/null || true)
    # a loaded machine may not have let the sampler take its first sample within a short run
    [[ -n $rss_load ]] || rss_load=$(rss_kb "$spid")
  fi
  if [[ $wl != ttft ]]; then
    log "$name: latency -t1 -c1 -d${C1_S}s"
    run_wrk "$port" "$wl" 1 1 "$C1_S" "$TMP/$name.c1"
    c1=$(json_of "$TMP/$name.c1")
  fi
  if [[ $load == null ]]; then
    log "$name: no result from load run: $(tail -3 "$TMP/$name.load")"
  fi
  if [[ $do_idle == 1 && -n $spid ]]; then
    log "$name: $IDLE_CONNS idle keep-alive connections"
    idle=$(idle_conns_test "$port" "$spid")
  fi
  if [[ $wl == tls ]]; then # connection reuse: TLS connections the upstream accepted vs requests it served
    local nreq nconn
    nreq=$(wc -l <"$TMP/up/tls.log"); nconn=$(sort -u "$TMP/up/tls.log" | wc -l)
    log "$name: upstream TLS connections: $nconn for $nreq requests"
    echo "$nconn $nreq" >"$TMP/res/$name.tls_conns"
  fi
  st=ok
  if ! kill -0 "${spid:-$$}" 2>/dev/null; then st=failed; reason="server process died during the run"; fi
  write_case "$name" "$server" "$wl" "$base" "$dir" "$st" "$reason" "$load" "${c1:-null}" "$rss_idle" "$rss_load" "$idle"
}

run_sluice_case() { # name kind workload baseline direct
  local name=$1 kind=$2 wl=$3 base=$4 dir=$5 port cfg spid reason do_idle=0
  ensure_sluice
  if [[ $SLUICE_STATE != ok ]]; then
    log "$name: skipped ($SLUICE_REASON)"
    write_case "$name" "sluice:$kind" "$wl" "$base" "$dir" skipped "$SLUICE_REASON"
    return
  fi
  port=$(free_ports 1)
  cfg=$TMP/$name.yaml
  sluice_config "$kind" "$port" "$(workload_target "$wl")" "$cfg"
  if ! (cd "$ROOT" && timeout 30 "$SLUICE_BIN" -t -c "$cfg") >"$TMP/$name.check" 2>&1; then
    reason="config refused by '$(basename "$SLUICE_BIN") -t': $(grep -v '^\s*$' "$TMP/$name.check" | head -3 | tr '\n\t' '  ' | head -c 300)"
    log "$name: skipped ($reason)"
    write_case "$name" "sluice:$kind" "$wl" "$base" "$dir" skipped "$reason"
    return
  fi
  (cd "$ROOT" && exec taskset -c "$SUT_CPU" "$SLUICE_BIN" -c "$cfg") </dev/null >"$TMP/$name.log" 2>&1 &
  spid=$!; PIDS+=("$spid")
  if ! wait_port "$port" "$spid" 15; then
    reason="sluice did not start listening on $port: $(tail -3 "$TMP/$name.log" | tr '\n' ' ')"
    log "$name: FAILED ($reason)"
    write_case "$name" "sluice:$kind" "$wl" "$base" "$dir" failed "$reason"
    stop_pid "$spid"
    return
  fi
  [[ $kind == plain && $wl == get ]] && do_idle=1
  measure "$name" "sluice:$kind" "$wl" "$base" "$dir" "$port" "$spid" "$do_idle"
  stop_pid "$spid"
  [[ -s $TMP/$name.log ]] && cp "$TMP/$name.log" "$TMP/res/$name.log"
  return 0
}

log "cores: server under test on $SUT_CPU; upstream nginx, SSE mock, wrk and clients on $LOAD_CPU"
log "ports: upstream json=$U_JSON sse=$U_SSE paced=$U_PACED upload=$U_UPLOAD; nginx proxy json=$P_JSON sse=$P_SSE paced=$P_PACED upload=$P_UPLOAD"

while IFS='|' read -r -u 3 name server wl base dir; do
  [[ -z $name ]] && continue
  want_case "$name" || continue
  case $server in
    direct) measure "$name" direct "$wl" "$base" "$dir" "$(workload_port "$wl" direct)" "" 0 ;;
    nginx)
      [[ -n $NGX_PID ]] || start_nginx_proxy
      measure "$name" nginx "$wl" "$base" "$dir" "$(workload_port "$wl" nginx)" "$NGX_PID" \
        "$([[ $wl == get ]] && echo 1 || echo 0)" ;;
    sluice:*) run_sluice_case "$name" "${server#sluice:}" "$wl" "$base" "$dir" ;;
  esac
  for helper in "upstream nginx:$UP_PID" "paced SSE mock:$MOCK_PID" "streams SSE mock:$SMOCK_PID"; do
    kill -0 "${helper##*:}" 2>/dev/null ||
      die "${helper%:*} (pid ${helper##*:}) died during case $name: killed from outside the harness? Results of this run are not valid"
  done
done 3<<<"$CASE_TABLE"

[[ -n $NGX_PID ]] && stop_pid "$NGX_PID"

# ---------------------------------------------------------------- report
SLUICE_BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$SLUICE_BIN")/CMakeCache.txt" 2>/dev/null || true)
[[ $SLUICE_BUILD_TYPE != Release ]] && [[ -x $SLUICE_BIN ]] && log "note: $SLUICE_BIN is a '${SLUICE_BUILD_TYPE:-unknown}' build, not Release"
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
NGINX_VERSION=$({ "$NGINX" -v 2>&1 || true; } | sed 's/^nginx version: //')
WRK_VERSION=$({ "$WRK" -v 2>&1 || true; } | head -1 | awk '{print $2}')
mkdir -p "$RESULTS_DIR"
set +e
python3 "$LIB/report.py" --res "$TMP/res" --out "$RESULTS_DIR" \
  --meta "$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
    nproc "$NCPU" cpu_model "$CPU_MODEL" kernel "$(uname -r)" nginx_version "$NGINX_VERSION" \
    wrk_version "$WRK_VERSION" sluice_commit "$SLUICE_COMMIT" sluice_bin "$SLUICE_BIN" sluice_build_type "${SLUICE_BUILD_TYPE:-unknown}" \
    duration "${DUR_S}s" c1_duration "${C1_S}s" warmup "${WARM_S}s" connections "$CONNECTIONS" \
    threads "$THREADS" idle_conns "$IDLE_CONNS" ttft_requests "$TTFT_REQUESTS" \
    sse_events "$SSE_EVENTS" sse_interval_ms "$SSE_INTERVAL_MS" \
    sut_cpu "$SUT_CPU" load_cpu "$LOAD_CPU" cases "$CASES" ai_full_plugins "$AI_FULL_PLUGINS" \
    upload_bytes "$(body_bytes upload)" upload16k_bytes "$(body_bytes upload16k)" note "$NOTE" \
    stream_levels "$STREAM_LEVELS" stream_events "$STREAM_EVENTS" stream_interval_ms "$STREAM_INTERVAL_MS" \
    stream_unique "$STREAM_UNIQUE" \
    nginx_upload_buffer "${NGINX_UPLOAD_BUFFER:-default}")"
rc=$?
set -e
exit "$rc"
