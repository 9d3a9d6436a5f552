#!/usr/bin/env python3
"""Paced SSE upstream for time-to-first-token benchmarks (stdlib only).

Answers every request (any method, any path) with an OpenAI-style
chat.completion.chunk stream: --events chunks, one every --interval-ms,
then a usage chunk and `data: [DONE]`.  HTTP/1.1 keep-alive, chunked
transfer encoding; request bodies are read by Content-Length or chunked.
Many concurrent connections are fine (asyncio).

With --unique-ids every answer carries an id of its own ("chatcmpl-<n>"), as a provider's answers do: the
events of concurrent streams are then not the same bytes (the gateway's LuaJIT interns strings, so identical
events of many streams would be stored once, and a stream's memory would look smaller than with real traffic).

Usage: sse_mock.py --port N [--events 20] [--interval-ms 5] [--first-ms 5] [--unique-ids]
"""
import argparse
import asyncio
import json
import signal
import time


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def make_events(n):
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
            "created": 1700000000, "model": "gpt-4o-mini"}
    out = [event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "finish_reason": None}]))]
    for i in range(n):
        out.append(event(dict(base, choices=[{"index": 0, "delta": {"content": "tok%d " % i},
                                               "finish_reason": None}])))
    out.append(event(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])))
    out.append(event(dict(base, choices=[], usage={"prompt_tokens": 12, "completion_tokens": n,
                                                   "total_tokens": 12 + n})))
    out.append(b"data: [DONE]\n\n")
    return out


async def read_body(reader, headers):
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("eof in chunked body")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers until empty line
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            await reader.readexactly(size + 2)
    n = int(headers.get("content-length", "0") or 0)
    if n:
        await reader.readexactly(n)


async def handle(reader, writer, args, events):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            headers = {}
            while True:
                h = await reader.readline()
                if not h:
                    return
                if h in (b"\r\n", b"\n"):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            await read_body(reader, headers)
            close = headers.get("connection", "").lower() == "close" or line.rstrip().endswith(b"HTTP/1.0")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                         b"Transfer-Encoding: chunked\r\n"
                         + (b"Connection: close\r\n" if close else b"") + b"\r\n")
            answer = events
            if args.unique_ids:
                args.answers += 1
                own = b"chatcmpl-%08d" % args.answers
                answer = [ev.replace(b"chatcmpl-bench", own) for ev in events]
            for i, ev in enumerate(answer):
                delay = args.first_ms if i == 0 else (args.interval_ms if i <= args.events else 0)
                if delay:
                    await writer.drain()
                    await asyncio.sleep(delay / 1000.0)
                writer.write(chunk(ev))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--first-ms", type=float, default=5.0)
    p.add_argument("--unique-ids", action="store_true")
    args = p.parse_args()
    args.answers = 0
    events = make_events(args.events)
    server = await asyncio.start_server(lambda r, w: handle(r, w, args, events),
                                        args.host, args.port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print("sse_mock listening on %s:%d" % (args.host, args.port), flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
