#!/usr/bin/env python3
"""Time-to-first-token client for streaming (SSE) responses (stdlib only).

Each of --concurrency threads holds one keep-alive connection and sends
requests back to back until --requests in total were sent (or --max-seconds
passed).  For each response it records the time from sending the request to
the first body bytes containing "data:" (TTFT) and to the end of the body
(total).  Prints one JSON object; exits 0 even when there were errors (they
are counted in the JSON, the caller decides).

Usage: ttft.py --port N --path /v1/chat/completions [--body-file F]
               [--requests 200] [--concurrency 1] [--timeout 10]
"""
import argparse
import json
import socket
import threading
import time


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Conn:
    def __init__(self, host, port, timeout):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = None
        self.f = None

    def open(self):
        self.close()
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        for o in (self.f, self.sock):
            try:
                if o:
                    o.close()
            except OSError:
                pass
        self.sock = self.f = None

    def request(self, raw):
        """Returns (status, ttft_s or None, total_s, keepalive)."""
        if self.sock is None:
            self.open()
        t0 = time.perf_counter()
        self.sock.sendall(raw)
        f = self.f
        status_line = f.readline()
        if not status_line:
            raise ConnectionError("connection closed before status line")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            h = f.readline()
            if not h:
                raise ConnectionError("eof in headers")
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip().lower()
        ttft = None
        keep = headers.get("connection") != "close"
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                line = f.readline()
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while f.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = f.read(size + 2)
                if len(data) < size + 2:
                    raise ConnectionError("short chunk")
                if ttft is None and b"data:" in data:
                    ttft = time.perf_counter() - t0
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = f.read1(min(left, 65536))
                if not data:
                    raise ConnectionError("short body")
                left -= len(data)
                if ttft is None and b"data:" in data:
                    ttft = time.perf_counter() - t0
        else:
            keep = False
            while True:
                data = f.read1(65536)
                if not data:
                    break
                if ttft is None and b"data:" in data:
                    ttft = time.perf_counter() - t0
        total = time.perf_counter() - t0
        if not keep:
            self.close()
        return status, ttft, total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--method", default="POST")
    p.add_argument("--body-file")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=int, default=5, help="requests per connection not recorded")
    args = p.parse_args()

    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as fh:
            body = fh.read()
    raw = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
           "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % (args.method, args.path, args.host, args.port, len(body))).encode() + body

    lock = threading.Lock()
    state = {"left": args.requests, "ttft": [], "total": [], "non2xx": 0, "errors": 0,
             "no_data": 0, "last_error": None}
    deadline = time.monotonic() + args.max_seconds

    def worker():
        c = Conn(args.host, args.port, args.timeout)
        warm = args.warmup
        while time.monotonic() < deadline:
            if warm == 0:
                with lock:
                    if state["left"] <= 0:
                        break
                    state["left"] -= 1
            try:
                status, ttft, total = c.request(raw)
            except (OSError, ValueError, IndexError) as e:
                c.close()
                with lock:
                    state["errors"] += 1
                    state["last_error"] = repr(e)
                if warm > 0:
                    warm -= 1
                time.sleep(0.01)
                continue
            if warm > 0:
                warm -= 1
                continue
            with lock:
                if status < 200 or status > 299:
                    state["non2xx"] += 1
                elif ttft is None:
                    state["no_data"] += 1
                else:
                    state["ttft"].append(ttft)
                    state["total"].append(total)
        c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.max_seconds + args.timeout + 5)
    elapsed = time.monotonic() - t0
    tt = sorted(state["ttft"])
    to = sorted(state["total"])
    us = lambda v: None if v is None else round(v * 1e6)
    out = {
        "requests": len(tt), "duration_s": round(elapsed, 3),
        "rps": round(len(tt) / elapsed, 1) if elapsed > 0 else 0,
        "ttft_p50_us": us(pct(tt, 50)), "ttft_p90_us": us(pct(tt, 90)), "ttft_p99_us": us(pct(tt, 99)),
        "total_p50_us": us(pct(to, 50)), "total_p99_us": us(pct(to, 99)),
        "non2xx": state["non2xx"], "socket_errors": state["errors"], "no_data": state["no_data"],
        "last_error": state["last_error"],
    }
    print("BENCH_JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
