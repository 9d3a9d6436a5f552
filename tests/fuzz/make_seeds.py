#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/fuzz/corpus/<harness>/ (seed-*), from literals here and from the
recorded fixtures (conf/, spec/fixtures/). Run from anywhere: python3 tests/fuzz/make_seeds.py. Inputs the
fuzzer found and minimised (regression seeds) live next to them under other names and are left alone."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

# Cut plans (fuzz.h): count byte, then that many length bytes (length = byte + 1).
WHOLE = b"\x00"
BYTEWISE = b"\x01\x00"
ODD = b"\x03\x02\x06\x0f"  # pieces of 3, 7, 16, 3, 7, 16, ...
PLANS = [WHOLE, BYTEWISE, ODD]


def write(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


REQUESTS = {
    "get": b"GET /v1/models?x=1 HTTP/1.1\r\nHost: api.example.com:8080\r\nAccept: */*\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                 b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "chunked": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
               b"0\r\n\r\n",
    # the trailer crash of core/http/parser.c (a trailer after a chunked body is stored like a header after
    # the headers were finished): kept as a regression seed
    "trailer-crash": b"GET /plain/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
    "trailers-pipelined": b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                          b"X-A: 1\r\nX-B: 2\r\n\r\nGET /n HTTP/1.1\r\nHost: x\r\n\r\n",
    "expect": b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "http10": b"GET /old HTTP/1.0\r\n\r\nGET /old2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "upgrade": b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET / HTTP/1.1\r\n"
               b"Host: h\r\n\r\n",
    "absolute": b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "cl-te": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "ipv6-host": b"GET /x HTTP/1.1\r\nHost: [::1]:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(40)) + b"\r\n",
}

RESPONSES = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    "trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n"
                b"X-More: 2\r\n\r\n",
    "close": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {}\n\ndata: [DONE]\n\n",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 1\r\n\r\nx",
    "no-content": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "not-modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
    "connection-list": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                       b"Content-Length: 1\r\n\r\nx",
    "sse-chunked": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"e\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
    "many-headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(40)) +
                    b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n" +
                    b"T-1: 1\r\nT-2: 2\r\n\r\n",
}

CHUNKED = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "ext": b"5;name=value;q=\"x\"\r\nhello\r\nA\r\n0123456789\r\n0;last\r\n\r\n",
    "trailers": b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n",
    "upper-hex": b"1F\r\n" + b"x" * 31 + b"\r\n0\r\n\r\n",
    "then-more": b"2\r\nok\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    "one-byte-chunks": b"".join(b"1\r\n%c\r\n" % c for c in b"chunked") + b"0\r\n\r\n",
}


def http_seeds():
    for name, data in REQUESTS.items():
        for i, plan in enumerate(PLANS):
            write("fuzz_request", "%s-%d" % (name, i), b"\x00" + plan + data)
    write("fuzz_request", "limits", b"\x01" + WHOLE + REQUESTS["many-headers"])
    write("fuzz_request", "limits-body", b"\x01" + BYTEWISE + REQUESTS["chunked"])
    for name, data in RESPONSES.items():
        for i, plan in enumerate(PLANS):
            write("fuzz_response", "%s-%d" % (name, i), b"\x00" + plan + data)
    write("fuzz_response", "head", b"\x01" + WHOLE + RESPONSES["length"])
    write("fuzz_response", "http10-client", b"\x02" + ODD + RESPONSES["close"])
    for name, data in CHUNKED.items():
        write("fuzz_chunked", "req-" + name, b"\x00" + ODD + data)
        write("fuzz_chunked", "resp-" + name, b"\x01" + BYTEWISE + data)


def router_seeds():
    write("fuzz_router", "basic", b"R*0|/v1/chat/completions\nR*0|/v1/:op\nRA1|/v1/*rest\nRB0|/users/:id/posts/:post\n"
          b"R*0example.com|/\nR*0*.example.com|/api/*\nR*5|/*\n"
          b"MAapi.example.com|/api/x/y\nMBexample.com|/\nMA|/v1/chat/completions\nMB|/v1/models\n"
          b"MC|/users/7/posts/9\nMA|/users//posts/9\nMD|/nothing\nMAEXAMPLE.COM.:80|/\nM@|\n")
    write("fuzz_router", "hosts", b"R*0a.b|/x\nR*0*.b|/x\nR*0*.a.b|/x\nRA0[::1]|/x\nR*0|/x\n"
          b"MAa.b|/x\nMAz.a.b|/x\nMAq.b:8080|/x\nMA[::1]:1|/x\nMA|/x\nMB.b|/x\n")
    write("fuzz_router", "priorities", b"R*1|/p\nR*5|/p\nR*2|/q/:a\nR*7|/q/:b\nR*3|/r/*\nR*8|/r/*x\nR*0|/r/s/*\n"
          b"MA|/p\nMA|/q/x\nMA|/r/t\nMA|/r/s/u\nMA|/r\n")
    write("fuzz_router", "methods", b"RA0|/m\nRB0|/m\nRD9|/m/:a\nR*0|/m/*\nMA|/m\nMB|/m\nMC|/m\nME|/m/q\nMF|/m/q/r\n")


def text_seeds():
    for path in ["spec/fixtures/ai/anthropic/stream.sse", "spec/fixtures/ai/openai/chat_stream.sse",
                 "spec/fixtures/ai/gemini/stream_tools.sse", "spec/fixtures/ai/deepseek/reasoner_stream.sse"]:
        data = read(path)
        base = os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path)
        for i, plan in enumerate(PLANS):
            write("fuzz_sse", "%s-%d" % (base, i), plan + data)
    write("fuzz_sse", "crlf-mixed", ODD + b"event: a\r\ndata: 1\r\ndata:2\r\rid: 7\nretry: 30\n\n: comment\r\n"
          b"data\n\ndata: tail")
    for path in ["conf/sluice.yaml", "spec/fixtures/config/full.yaml", "spec/fixtures/config/errors.yaml"]:
        write("fuzz_yaml", os.path.basename(path), read(path))
    write("fuzz_yaml", "anchors", b"base: &b {a: 1, b: [1, 2, {c: x}]}\nuse: *b\nmerge:\n  <<: *b\n  d: ${HOME}\n"
          b"routes:\n  - {id: r1, paths: [/x], upstream: {nodes: ['127.0.0.1:80']}}\n")
    write("fuzz_yaml", "nested", b"a:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 20)))
    write("fuzz_yaml", "plugins", b"routes:\n  - id: r\n    paths: [/v1/*]\n    upstream: {nodes: {'127.0.0.1:9': 1}}\n"
          b"    plugins:\n      ai-proxy: {provider: {kind: openai, api_key: k}, model: m}\n"
          b"      key-auth: {}\n      ai-prompt-decorator: {prepend: [{role: system, content: hi}]}\n"
          b"consumers:\n  - {name: a, keys: [k1]}\nnode:\n  listen: 127.0.0.1:0\n  workers: 1\n")


KINDS = ["openai", "azure-openai", "deepseek", "openai-compatible", "anthropic", "gemini", "bedrock", "mock"]


def ai_seeds():
    fx = os.path.join(ROOT, "spec", "fixtures", "ai")
    for kind in sorted(os.listdir(fx)):
        for f in sorted(os.listdir(os.path.join(fx, kind))):
            if not (f.endswith(".sse") or f.endswith(".bin")):
                continue
            data = read(os.path.join("spec", "fixtures", "ai", kind, f))
            k = bytes([KINDS.index(kind)])
            for opts, plan in [(0, WHOLE), (1, ODD), (2 | 8, BYTEWISE), (1 | 4, WHOLE)]:
                write("fuzz_ai_stream", "%s-%s-%d" % (kind, f, opts), k + bytes([opts]) + plan + data)
    # mock: the OpenAI parser behind a translated path
    write("fuzz_ai_stream", "mock-openai", bytes([7, 0]) + ODD + read("spec/fixtures/ai/openai/chat_stream.sse"))


def chat_scan_seeds():
    # bodies the lean path takes (every content, tool and stream shape) and near misses of each
    m = b'"messages":[{"role":"user","content":"hi"}]'
    write("fuzz_chat_scan", "bench", read("bench/lib/payloads/chat.json"))
    write("fuzz_chat_scan", "stream", read("bench/lib/payloads/chat-stream.json"))
    write("fuzz_chat_scan", "usage", b'{"model":"m","stream":true,"stream_options":{"include_usage":true},' + m + b'}')
    write("fuzz_chat_scan", "full",
          b'{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","name":"n","content":['
          b'{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"u"}},{"type":"input_audio",'
          b'"input_audio":{"data":"x"}},{"type":"file","file":null}]},{"role":"assistant","content":null,'
          b'"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool",'
          b'"tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":'
          b'{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}},"stop":["a"],'
          b'"max_tokens":5,"n":1,"temperature":0.5,"response_format":{"type":"text"},"top_k":null}')
    write("fuzz_chat_scan", "near", b'{"model":"m",' + m + b',"max_tokens":1.0,"stream":false}')


if __name__ == "__main__":
    http_seeds()
    router_seeds()
    text_seeds()
    ai_seeds()
    chat_scan_seeds()
