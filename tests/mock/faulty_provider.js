// A misbehaving LLM provider for the stream fault specs (spec/ai_stream_faults_spec.lua, tests/e2e/sdk_faults.sh):
// OpenAI and Anthropic wire formats, streamed answers that break at a chosen place in a chosen way. A raw TCP
// server (not node's http module), so every byte on the wire is chosen here.
//
// usage: node tests/mock/faulty_provider.js PORT     (PORT 0: any free port; prints "listening PORT")
//
// Endpoints (path suffix): POST .../chat/completions (OpenAI), POST .../messages (Anthropic). Anything else: 404.
// The fault comes from a "/f/SPEC" segment in the path (a provider endpoint http://127.0.0.1:P/f/reset/mid_event)
// or, when the path has none, from the request's model name "f/SPEC" (so one provider serves every fault).
// SPEC = FAULT/WHERE[/OPTION...]:
//   FAULT  none     the whole stream, well formed
//          reset    a TCP reset (RST) at WHERE
//          close    a clean end at WHERE: the chunked body ends with its last chunk (framing eof: FIN)
//          stall    nothing more is sent at WHERE; the connection stays open (until the gateway closes it)
//          garbage  junk at WHERE ("\0\xff" bytes, a non-SSE line, a `data:` line that is not JSON), then the rest
//                   of the stream from the next whole event on (head: junk instead of a status line, then FIN)
//          nolf     after the head, OPTION MiB (default 10) of "A" without a line end, then FIN (WHERE ignored)
//          partial  one event, then `data: {"id":"chatcmpl-1","obj`, then a clean end (WHERE ignored)
//          bigevent one content event of OPTION KiB of text (default 2048), then the rest (WHERE ignored)
//   WHERE  head       before any byte of the response
//          first      after the response head, before the first event
//          mid_first  in the middle of the first event
//          mid_stream between two events, half way
//          mid_event  in the middle of the event half way
//          before_end right before the terminal event (OpenAI `data: [DONE]`, Anthropic `message_stop`)
//          atK        after K whole events (e.g. at98 with n100)
//          end        nowhere (with FAULT none)
//   OPTION nN       N content events (default 5);  gN   N ms between events (default 2)
//          eof      close-delimited body (no chunked framing: the body ends with the connection)
//          one      the whole answer, fault included, in one TCP write (socket corked until the end): the gateway
//                   reads it at once
//          MiB/KiB count for nolf / bigevent (a bare number)
// The content is "w0 w1 ... w(N-1) " (2 tokens per word for estimates); usage: OpenAI 11 prompt / N*2 completion,
// Anthropic 12 input / N*2 output.
// Test hooks: GET /__requests -> [{path, model, stream, spec, aborted}] (aborted: the gateway closed the connection
// before the mock was done), POST /__reset forgets them.
'use strict';
const net = require('net');

const port = Number(process.argv[2] || 0);
const requests = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const GARBAGE = Buffer.concat([Buffer.from([0, 0xff, 0xfe]), Buffer.from('<html>not sse{{{\ndata: <html>502 Bad Gateway</html>\n\n')]);

function parseSpec(s) {
  const parts = String(s || 'none/end').split('/').filter(Boolean);
  const spec = { fault: parts[0] || 'none', where: parts[1] || 'end', n: 5, gap: 2, eof: false, size: null, one: false };
  for (const o of parts.slice(2)) {
    if (/^n\d+$/.test(o)) spec.n = Number(o.slice(1));
    else if (/^g\d+$/.test(o)) spec.gap = Number(o.slice(1));
    else if (o === 'eof') spec.eof = true;
    else if (o === 'one') { spec.one = true; spec.gap = 0; }
    else if (/^\d+$/.test(o)) spec.size = Number(o);
  }
  if (/^\d+$/.test(spec.where)) spec.size = Number(spec.where);
  return spec;
}

// ---------------------------------------------------------------- the events of a whole stream
function openaiEvents(model, n) {
  const base = { id: 'chatcmpl-f', object: 'chat.completion.chunk', created: 1, model };
  const ev = (o) => `data: ${JSON.stringify(Object.assign({}, base, o))}\n\n`;
  const out = [ev({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })];
  for (let i = 0; i < n; i++) out.push(ev({ choices: [{ index: 0, delta: { content: `w${i} ` }, finish_reason: null }] }));
  out.push(ev({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }));
  out.push(ev({ choices: [], usage: { prompt_tokens: 11, completion_tokens: n * 2, total_tokens: 11 + n * 2 } }));
  return { events: out, terminal: 'data: [DONE]\n\n' };
}

function anthropicEvents(model, n) {
  const ev = (name, o) => `event: ${name}\ndata: ${JSON.stringify(Object.assign({ type: name }, o))}\n\n`;
  const out = [ev('message_start', { message: { id: 'msg_f', type: 'message', role: 'assistant', model, content: [],
    stop_reason: null, stop_sequence: null, usage: { input_tokens: 12, output_tokens: 1 } } }),
  ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })];
  for (let i = 0; i < n; i++) out.push(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: `w${i} ` } }));
  out.push(ev('content_block_stop', { index: 0 }));
  out.push(ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: n * 2 } }));
  return { events: out, terminal: ev('message_stop', {}) };
}

// ---------------------------------------------------------------- writing a response
class Writer {
  constructor(sock, eof) { this.sock = sock; this.eof = eof; }
  head() {
    const framing = this.eof ? 'Connection: close\r\n' : 'Transfer-Encoding: chunked\r\nConnection: close\r\n';
    this.sock.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n${framing}\r\n`);
  }
  body(data) {
    const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (b.length === 0 || this.sock.destroyed) return true;
    if (this.eof) return this.sock.write(b);
    return this.sock.write(Buffer.concat([Buffer.from(b.length.toString(16) + '\r\n'), b, Buffer.from('\r\n')]));
  }
  end() {
    if (this.sock.destroyed) return;
    if (!this.eof) this.sock.write('0\r\n\r\n');
    if (this.one) this.sock.uncork();
    this.sock.end();
  }
  drained() { return new Promise((r) => (this.sock.writableNeedDrain ? this.sock.once('drain', r) : r())); }
}

// Where the fault happens: {k: whole events before it, half: also half of event k}.
function position(where, count) {
  const mid = Math.floor(count / 2);
  switch (where) {
    case 'first': return { k: 0, half: false };
    case 'mid_first': return { k: 0, half: true };
    case 'mid_stream': return { k: mid, half: false };
    case 'mid_event': return { k: mid, half: true };
    case 'before_end': return { k: count, half: false };
    default: {
      const m = /^at(\d+)$/.exec(where);
      if (m) return { k: Math.min(Number(m[1]), count), half: false };
      return null; // 'end': no fault in the stream
    }
  }
}

async function stream(sock, rec, spec, api, model) {
  const w = new Writer(sock, spec.eof);
  if (spec.one) { w.one = true; sock.cork(); } // head, events, fault and end leave in one write at w.end()
  const fin = () => { rec.done = true; }; // whatever ends the exchange from here on is the mock's doing
  const { events, terminal } = api === 'anthropic' ? anthropicEvents(model, spec.n) : openaiEvents(model, spec.n);
  if (spec.where === 'head' && spec.fault !== 'none') {
    fin();
    if (spec.fault === 'reset') return sock.resetAndDestroy();
    if (spec.fault === 'close') return sock.end();
    if (spec.fault === 'stall') return;
    if (spec.fault === 'garbage') { sock.write(GARBAGE); return sock.end(); }
  }
  w.head();
  if (spec.fault === 'nolf') {
    const chunk = Buffer.alloc(64 * 1024, 'A');
    const total = (spec.size || 10) * 1024 * 1024;
    for (let sent = 0; sent < total && !sock.destroyed; sent += chunk.length) {
      w.body(chunk);
      await w.drained();
    }
    fin();
    return w.end();
  }
  if (spec.fault === 'partial') {
    w.body(events[0]);
    await sleep(spec.gap);
    w.body('data: {"id":"chatcmpl-1","obj');
    await sleep(spec.gap);
    fin();
    return w.end();
  }
  if (spec.fault === 'bigevent') {
    const kib = spec.size || 2048;
    const text = 'x'.repeat(kib * 1024);
    events.splice(1, 0, api === 'anthropic'
      ? `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } })}\n\n`
      : `data: ${JSON.stringify({ id: 'chatcmpl-f', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`);
  }
  const pos = spec.fault === 'none' ? null : position(spec.where, events.length);
  for (let i = 0; i <= events.length; i++) {
    if (sock.destroyed) return;
    if (pos && i === pos.k) {
      if (pos.half && i < events.length) w.body(events[i].slice(0, Math.floor(events[i].length / 2)));
      if (spec.fault === 'reset') { await sleep(spec.gap); fin(); return sock.resetAndDestroy(); }
      if (spec.fault === 'close') { await sleep(spec.gap); fin(); return w.end(); }
      if (spec.fault === 'stall') return fin();
      if (spec.fault === 'garbage') {
        w.body(GARBAGE);
        if (pos.half) continue; // the rest of the cut event is dropped
      }
    }
    w.body(i < events.length ? events[i] : terminal);
    await w.drained();
    if (spec.gap > 0) await sleep(spec.gap);
  }
  fin();
  w.end();
}

// ---------------------------------------------------------------- raw HTTP/1.1 requests
function handle(sock, method, path, headers, raw) {
  const reply = (status, body) => {
    const b = JSON.stringify(body);
    sock.end(`HTTP/1.1 ${status} X\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n\r\n${b}`);
  };
  const p = path.split('?')[0];
  if (p === '/__requests') return reply(200, requests);
  if (p === '/__reset') { requests.length = 0; return reply(200, { ok: true }); }
  let body = {};
  try { body = JSON.parse(raw || '{}'); } catch (e) { return reply(400, { error: { message: 'bad JSON (faulty mock)' } }); }
  const api = p.endsWith('/messages') ? 'anthropic' : p.endsWith('/chat/completions') ? 'openai' : null;
  if (!api) return reply(404, { error: { message: `faulty mock: no endpoint ${method} ${p}` } });
  const m = /\/f\/(.+?)\/(?:v1\/)?(?:chat\/completions|messages)$/.exec(p);
  const specText = m ? m[1] : (typeof body.model === 'string' && body.model.startsWith('f/') ? body.model.slice(2) : 'none/end');
  const spec = parseSpec(specText);
  const rec = { path, model: body.model, stream: body.stream === true, spec: specText, aborted: false, done: false };
  requests.push(rec);
  sock.on('close', () => { if (!rec.done) rec.aborted = true; });
  if (body.stream !== true) {
    rec.done = true;
    return reply(400, { error: { message: 'the faulty mock only streams' } });
  }
  stream(sock, rec, spec, api, body.model || 'm').catch(() => sock.destroy());
}

const server = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('error', () => {});
  sock.setTimeout(30000, () => sock.destroy()); // a stalled stream does not outlive the test
  const onData = (d) => {
    buf = Buffer.concat([buf, d]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const lines = buf.slice(0, end).toString('latin1').split('\r\n');
    const [method, path] = lines[0].split(' ');
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] || 0);
    if (buf.length < end + 4 + len) return;
    sock.removeListener('data', onData);
    handle(sock, method, path, headers, buf.slice(end + 4, end + 4 + len).toString('utf8'));
  };
  sock.on('data', onData);
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
