#!/usr/bin/env bash
# Drives the AddressSanitizer build of the gateway through the ways a request can go (proxy, keep-alive,
# pipelining, malformed input, dead upstream, client abort, clients leaving mid-stream with FIN or RST in PASS and
# FILTER mode, connection limits, accepting paused for lack of descriptors, Admin API changes, SIGHUP reload),
# then drains it with SIGTERM. Fails on any ASan/UBSan report or leak (LeakSanitizer) and on a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SLUICE_ASAN_BIN:-build-asan/sluice}
dir=$(mktemp -d /tmp/sluice-leak-XXXXXX)
pids=()
cleanup() {
    # nginx's master passes TERM to its worker (a KILLed master would orphan it)
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); ADM=$(port); DEAD=$(port); MC=$(port)
cat > "$dir/up.conf" <<NGX
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err;
events { worker_connections 1024; }
http { access_log off; client_max_body_size 16m; client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
       uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:$UP;
    location /big { default_type application/octet-stream; alias /usr/sbin/nginx; }
    location /slow { return 200 'slow'; }
    location / { default_type application/json; return 200 '{"ok":true}'; } } }
NGX
nginx -c "$dir/up.conf" -e "$dir/up.err" & pids+=($!)
# memcached: a live server and a dead one, so each worker holds connections (and a failed one) when it stops
memcached -l 127.0.0.1 -p "$MC" -U 0 -u nobody > "$dir/mc.log" 2>&1 & pids+=($!)
# slow heads and streams, for clients that leave mid-response
node spec/support/stream_upstream.js "$dir/stream.port" > "$dir/stream.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -s "$dir/stream.port" ] && break; sleep 0.1; done
SSE=$(cat "$dir/stream.port")
cat > "$dir/sluice.yaml" <<YAML
node:
  listen: ["127.0.0.1:$GW"]
  workers: 2
  admin: {listen: "127.0.0.1:$ADM", key: "leak-check-key"}
  log_level: info
  access_log: {path: "$dir/access.log"}
  limits: {max_header_size: 4k, header_timeout: 1}
  drain_timeout: 5
  plugin_paths: ["$PWD/plugins", "$PWD/spec/fixtures/http_plugins", "$PWD/spec/fixtures/plugins"]
  shared_dicts: {probe: 1m}
  memcached: {servers: ["127.0.0.1:$MC", "127.0.0.1:$DEAD"], timeout: 0.5}
upstreams:
  up: {nodes: ["127.0.0.1:$UP"]}
  dead: {nodes: ["127.0.0.1:$DEAD"], timeout: {connect: 1}}
  sse: {nodes: ["127.0.0.1:$SSE"]}
routes:
  - {id: sse, paths: ["/sse/*"], upstream: sse, strip_prefix: true}
  - {id: ssef, paths: ["/ssef/*"], upstream: sse, strip_prefix: true, plugins: {spec-tagger: {}}}
  - {id: api, paths: ["/api/*"], upstream: up, strip_prefix: true}
  - {id: dead, paths: ["/dead"], upstream: dead}
  - {id: probe, paths: ["/probe"], plugins: {http-probe: {}}}
  - {id: mc, paths: ["/mc"], plugins: {mc-count: {}}}
YAML
ASAN_OPTIONS=detect_leaks=1:halt_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "$BIN" -c "$dir/sluice.yaml" 2> "$dir/err.log" & gw=$!
pids+=("$gw") # a failed check must not leave the gateway running
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/" && break; sleep 0.1; done
c() { curl -s -m 5 -o /dev/null -w '%{http_code}\n' "$@" || true; }
[ "$(c "http://127.0.0.1:$GW/api/x")" = 200 ]
[ "$(c "http://127.0.0.1:$GW/nope")" = 404 ]
# memcached calls from both workers (new connections each time: the kernel spreads them), to both servers
for i in $(seq 1 40); do c -H "x-seq: $i" "http://127.0.0.1:$GW/mc" > /dev/null; done
[ "$(c "http://127.0.0.1:$GW/dead")" = 502 ]
[ "$(c -X POST --data-binary @/etc/services "http://127.0.0.1:$GW/api/post")" = 200 ]
# bodies over body_buffer_size stream upstream (length, chunked), are dropped after an early answer, or meet a
# dead upstream
[ "$(c -X POST --data-binary @/usr/sbin/nginx "http://127.0.0.1:$GW/api/post")" = 200 ]
[ "$(c -X POST -H 'Transfer-Encoding: chunked' --data-binary @/usr/sbin/nginx "http://127.0.0.1:$GW/api/post")" = 200 ]
[ "$(c -X POST --data-binary @/usr/sbin/nginx "http://127.0.0.1:$GW/nope")" = 404 ]
[ "$(c -X POST --data-binary @/usr/sbin/nginx "http://127.0.0.1:$GW/dead")" = 502 ]
c "http://127.0.0.1:$GW/api/big" > /dev/null
python3 - "$GW" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
def raw(data, wait=0.5, close_early=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(data)
    if close_early:
        s.close(); return b""
    out = b""; end = time.time() + wait
    s.settimeout(0.3)
    while time.time() < end:
        try:
            b = s.recv(65536)
            if not b: break
            out += b
        except socket.timeout:
            pass
    s.close(); return out
r = raw(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\nGET /api/b HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
assert r.count(b"HTTP/1.1 ") == 3, r
assert b"BAD" not in raw(b"BAD REQUEST LINE\r\n\r\n")
assert b" 431 " in raw(b"GET /api/ HTTP/1.1\r\nX: " + b"a" * 8000 + b"\r\n\r\n")
assert b" 400 " in raw(b"POST /api/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
assert b" 408 " in raw(b"GET /api/ HTTP/1.1\r\nHo", wait=2.5)
raw(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n", close_early=True)
raw(b"POST /api/up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 300000, close_early=True)
for i in range(200):
    raw(b"GET /api/k HTTP/1.1\r\nHost: x\r\n\r\n" * 3, wait=0.01)
# clients that leave mid-response (PASS: /sse, FILTER: /ssef): before the head, mid-stream with FIN or RST, and
# one the gateway is not reading (pipelined requests behind the stream) so that only a failed write tells
import struct
def leave(path, after=0.3, rst=False, extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" + extra)
    time.sleep(after)
    s.settimeout(0.1)
    try:
        while s.recv(65536): pass
    except socket.timeout:
        pass
    if rst:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
for base in (b"/sse", b"/ssef"):
    leave(base + b"/head?ms=5000")
    leave(base + b"/stream?n=100&ms=50")
    leave(base + b"/stream?n=100&ms=50", rst=True)
    leave(base + b"/stream?n=300&ms=20", extra=b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)
PY
for _ in $(seq 50); do
    curl -s "http://127.0.0.1:$SSE/_stats" | grep -q '"open":0' && break; sleep 0.1
done
curl -s "http://127.0.0.1:$SSE/_stats" | grep -q '"open":0' || { echo "upstream streams not cancelled"; exit 1; }
c -N -m 1 "http://127.0.0.1:$GW/sse/stream?n=100&ms=100" > /dev/null
c -N -m 1 "http://127.0.0.1:$GW/ssef/stream?n=100&ms=100" > /dev/null
# out of descriptors: the soft limit drops under the gateway, accepting pauses; then it is given back
hard=$(prlimit --pid "$gw" --nofile --noheadings --output HARD | tr -d ' ')
prlimit --pid "$gw" --nofile=$(( $(ls /proc/"$gw"/fd | wc -l) + 20 )):
python3 - "$GW" "$ADM" "$dir/err.log" <<'PY'
import socket, sys, time
port, adm, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(80)]
end = time.time() + 5
while time.time() < end and "accepting paused" not in open(log).read():
    time.sleep(0.1)
assert "accepting paused" in open(log).read(), "accept4 never failed"
for s in socks: s.close()
PY
prlimit --pid "$gw" --nofile="$hard":
# over the Admin API's own connection limit: 503
python3 - "$ADM" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
socks = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(70)]
time.sleep(0.5)
for s in socks: s.close()
PY
for _ in $(seq 50); do [ "$(c "http://127.0.0.1:$GW/api/x")" = 200 ] && break; sleep 0.2; done
# sluice.http from a plugin: success (kept-alive), refused, timeout, stream, multi, timer, log phase
P="http://127.0.0.1:$GW/probe"
for mode in buffer buffer stream multi timer log; do
    [ "$(c -H "x-mode: $mode" -H "x-target: http://127.0.0.1:$UP/x" "$P")" = 200 ]
done
[ "$(c -H "x-target: http://127.0.0.1:$DEAD/" "$P")" = 200 ]
[ "$(c -H "x-target: http://127.0.0.1:$UP/big" -H "x-mode: stream" "$P")" = 200 ]
[ "$(c -H "x-mode: multi" -H "x-target: http://127.0.0.1:$UP/a,http://127.0.0.1:$DEAD/,http://127.0.0.1:$UP/big" "$P")" = 200 ]
[ "$(c -H "x-target: https://127.0.0.1:$UP/" "$P")" = 200 ]
[ "$(c -X PUT -H 'X-API-KEY: leak-check-key' -d '{"paths":["/new"],"upstream":"up"}' "http://127.0.0.1:$ADM/admin/routes/new")" = 201 ]
sleep 0.5
[ "$(c "http://127.0.0.1:$GW/new")" = 200 ]
kill -HUP "$gw"; sleep 0.5
[ "$(c "http://127.0.0.1:$GW/api/x")" = 200 ]
[ "$(c -X DELETE -H 'X-API-KEY: leak-check-key' "http://127.0.0.1:$ADM/admin/routes/new")" = 200 ]
kill -TERM "$gw"
rc=0; wait "$gw" || rc=$?
if [ "$rc" -ne 0 ] || grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$dir/err.log"; then
    echo "gateway exit code $rc"; cat "$dir/err.log"; exit 1
fi
echo "leak check clean ($(wc -l < "$dir/access.log") requests logged)"
