#!/usr/bin/env python3
"""Concurrent SSE streams client: the memory a server needs per stream in flight (stdlib only).

Opens --streams connections (one stream each, `Connection: close`), sends every request, then reads all of
them to the end, asyncio on one thread. Prints one JSON object: streams opened, completed, failed (with the
last error), streams without a `data:` event or without `[DONE]`, and the highest number of streams that were
in flight at once (response started and not yet finished), so a reader can tell whether the level asked for
was reached. Bounded by --max-seconds.

Usage: streams.py --port N --path /v1/chat/completions --body-file F --streams 1000 [--max-seconds 60]
"""
import argparse
import asyncio
import json
import time


class State:
    def __init__(self):
        self.active = 0
        self.max_active = 0
        self.opened = 0
        self.completed = 0
        self.failed = 0
        self.no_data = 0
        self.no_done = 0
        self.last_error = None


async def one(host, port, raw, st, start_gate):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        st.failed += 1
        st.last_error = "connect: %s" % e
        return
    st.opened += 1
    active = False
    try:
        await start_gate.wait()   # every connection is open before any request is sent
        writer.write(raw)
        await writer.drain()
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise ConnectionError("status %r" % status[:40])
        active = True
        st.active += 1
        st.max_active = max(st.max_active, st.active)
        body = await reader.read()   # Connection: close: the body ends with the connection
        if b"data:" not in body:
            st.no_data += 1
        if b"[DONE]" not in body:
            st.no_done += 1
        st.completed += 1
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
        st.failed += 1
        st.last_error = str(e)[:200]
    finally:
        if active:
            st.active -= 1
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--body-file", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=60)
    a = p.parse_args()
    body = open(a.body_file, "rb").read()
    raw = (b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % (a.path.encode(), len(body))) + body
    st = State()
    gate = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(a.host, a.port, raw, st, gate)) for _ in range(a.streams)]
    # open everything first (bounded), then let all requests go at once
    deadline = t0 + a.max_seconds / 2
    while st.opened + st.failed < a.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    gate.set()
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, a.max_seconds - (time.monotonic() - t0)))
    for t in pending:
        t.cancel()
    print(json.dumps({"streams": a.streams, "opened": st.opened, "completed": st.completed,
                      "failed": st.failed + len(pending), "no_data": st.no_data, "no_done": st.no_done,
                      "max_active": st.max_active, "last_error": st.last_error,
                      "seconds": round(time.monotonic() - t0, 2)}))


if __name__ == "__main__":
    asyncio.run(main())
