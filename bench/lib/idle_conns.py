#!/usr/bin/env python3
"""Open N keep-alive connections, one request each, then hold them idle.

Connects with at most --parallel handshakes/requests in flight, sends one
GET per connection (keep-alive), reads the full response, and keeps the
socket open.  Then prints one line "READY {json}" (opened, ok, failed,
seconds) and holds the connections until SIGTERM/SIGINT or
--hold-seconds (bounded), then closes everything and exits.

Usage: idle_conns.py --port N --conns 10000 [--path /static/chat.json]
"""
import argparse
import asyncio
import json
import resource
import signal
import sys
import time


async def one(args, sem, req, stats, keep):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), args.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            stats["failed"] += 1
            stats["last_error"] = "connect: " + repr(e)
            return
        try:
            writer.write(req)
            await asyncio.wait_for(read_response(reader), args.timeout)
            stats["ok"] += 1
            keep.append(writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            stats["failed"] += 1
            stats["last_error"] = "request: " + repr(e)
            writer.close()


async def read_response(reader):
    status = await reader.readline()
    code = int(status.split()[1])
    headers = {}
    while True:
        h = await reader.readline()
        if not h:
            raise ConnectionError("eof in headers")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip().lower()
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            await reader.readexactly(size + 2)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    if code < 200 or code > 299:
        raise ValueError("status %d" % code)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--path", default="/static/chat.json")
    p.add_argument("--parallel", type=int, default=200)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--hold-seconds", type=float, default=120.0)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: keep-alive\r\n\r\n"
           % (args.path, args.host, args.port)).encode()
    stats = {"ok": 0, "failed": 0, "last_error": None}
    keep = []
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    await asyncio.gather(*(one(args, sem, req, stats, keep) for _ in range(args.conns)))
    stats["opened"] = len(keep)
    stats["seconds"] = round(time.monotonic() - t0, 3)
    print("READY " + json.dumps(stats), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.hold_seconds)
    except asyncio.TimeoutError:
        pass
    for w in keep:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
