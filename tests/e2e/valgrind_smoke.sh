#!/usr/bin/env bash
# The release build under valgrind: it sees what ASan cannot, inside libuv (not instrumented), e.g. a handle
# closed inside memory another handle's close callback already freed. Fails on any valgrind error.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SLUICE_BIN:-build/sluice}
dir=$(mktemp -d /tmp/sluice-review-XXXXXX); trap 'kill $gw 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/sluice.yaml" <<YAML
node: {listen: ["127.0.0.1:$port"], workers: 1, drain_timeout: 1}
routes: [{id: r, paths: ["/x"], upstream: {nodes: ["127.0.0.1:9"]}}]
YAML
SLUICE_HOME=$PWD timeout 60 valgrind --error-exitcode=99 "$BIN" -c "$dir/sluice.yaml" > "$dir/vg.log" 2>&1 & gw=$!
for _ in $(seq 100); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.3; done
curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/nope"   # one request, connection closed by the client
curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/x"      # upstream refused: 502
printf 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    timeout 5 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall(sys.stdin.buffer.read()); s.settimeout(3); [None for _ in iter(lambda: s.recv(65536), b"")]' "$port" || true
sleep 1; kill -TERM $gw; rc=0; wait $gw || rc=$?
if [ "$rc" -eq 99 ] || grep -qE "Invalid (read|write)|uninitialised" "$dir/vg.log"; then
    grep -m1 -B2 -A16 -E "Invalid (read|write)|uninitialised" "$dir/vg.log" || tail -40 "$dir/vg.log"
    echo "FAIL: valgrind found errors (exit $rc)"; exit 1
fi
echo "ok: no invalid access (valgrind exit $rc)"
