// Mock LLM providers for specs and end-to-end tests: OpenAI, Anthropic and Gemini wire formats in one process.
//
// usage: node tests/mock/providers.js PORT        (PORT 0: any free port; the port is printed as "listening PORT")
//
// Endpoints (matched on the path suffix, so any base path in front works):
//   OpenAI     POST .../chat/completions, .../completions, .../embeddings (float or base64), GET .../models
//   Anthropic  POST .../messages                       (needs x-api-key and anthropic-version headers)
//   Gemini     POST .../models/M:generateContent, .../models/M:streamGenerateContent?alt=sse, :embedContent
// Scenario: a path segment "/s/NAME/" anywhere in the path (e.g. a provider endpoint http://127.0.0.1:P/s/slow),
// or the x-mock-scenario header:
//   ok (default)  text answer; a tool call instead when the request offers tools (first tool)
//   nousage       no usage in responses or streams
//   slow          streams with 150 ms between events (and 150 ms before the head)
//   midfail       streams a few events, then the connection is cut (no end of stream)
//   midfail-event streams a few events, then a provider error event (Anthropic `event: error`, OpenAI data error)
//   429 / 500 / 400 / 401 / 529   the provider's error body with that status (429 sends retry-after: 7)
//   hang          never answers (for timeouts)
// Usage numbers are fixed per provider so tests can compare: see USAGE below (also in each record).
// Test hooks: GET /__requests -> every request so far [{method, path, headers, body (parsed JSON when it is),
// scenario, usage, aborted}], POST /__reset forgets them, GET /__health.
// Per-instance knobs (for multi-provider specs), POST /__config with a JSON object (replaces the knobs; {} = none),
// GET /__config reads them; they apply to every API request of this instance:
//   latency_ms    wait before answering (and before the head of a stream)
//   status        answer with this error status (the provider's error body), e.g. 429 or 500 ...
//   fail_rate     ... only for this fraction of requests (0..1; default 1)
//   retry_after   the retry-after header sent with status (seconds; default 7 for 429, none otherwise)
//   stream_fail   "before": streams get the 200 head, then the connection is cut before any event;
//                 "after": streams fail after a few events (as the midfail scenario)
//   down          true: every API request's connection is cut at once (a dead provider)
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 0);
const USAGE = {
  openai: { prompt_tokens: 17, completion_tokens: 5, total_tokens: 22, prompt_tokens_details: { cached_tokens: 3 },
            completion_tokens_details: { reasoning_tokens: 0 } },
  anthropic: { input_tokens: 21, output_tokens: 7, cache_creation_input_tokens: 0, cache_read_input_tokens: 4 },
  gemini: { promptTokenCount: 13, candidatesTokenCount: 6, totalTokenCount: 19 },
  embeddings: { prompt_tokens: 8, total_tokens: 8 },
};
const TEXT = ['Hello', ' from', ' the', ' mock', '.'];
const requests = [];
let seq = 0;
let knobs = {};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const id = (p) => `${p}${(++seq).toString(36).padStart(8, '0')}`;

function scenarioOf(req, url) {
  const m = url.pathname.match(/\/s\/([\w-]+)(\/|$)/);
  return (m && m[1]) || req.headers['x-mock-scenario'] || 'ok';
}

function json(res, status, body, headers) {
  const s = JSON.stringify(body);
  res.writeHead(status, Object.assign({ 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) },
    headers || {}));
  res.end(s);
}

function sseStart(res) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
}

// Writes events one by one (gap ms apart); stops early on a cut (midfail) or an error event.
async function play(res, events, sc, errorEvent) {
  const gap = sc === 'slow' ? 150 : 2;
  for (let i = 0; i < events.length; i++) {
    if (res.destroyed) return;
    if ((sc === 'midfail' || sc === 'midfail-event') && i === 3) {
      if (sc === 'midfail') { res.socket.destroy(); return; }
      res.write(errorEvent);
      res.end();
      return;
    }
    res.write(events[i]);
    await sleep(gap);
  }
  res.end();
}

function firstTool(body) {
  const t = Array.isArray(body.tools) && body.tools[0];
  if (!t) return null;
  if (t.function) return t.function.name;               // OpenAI
  if (t.name) return t.name;                            // Anthropic
  if (t.functionDeclarations) return t.functionDeclarations[0].name; // Gemini
  return null;
}
const TOOL_ARGS = { location: 'Paris', unit: 'celsius' };

// ---------------------------------------------------------------- errors per provider
const OPENAI_ERR = {
  400: ['invalid_request_error', 'Invalid request (mock)', 'invalid_value'],
  401: ['invalid_request_error', 'Incorrect API key provided (mock)', 'invalid_api_key'],
  429: ['rate_limit_error', 'Rate limit reached (mock)', 'rate_limit_exceeded'],
  500: ['server_error', 'The server had an error (mock)', null],
  529: ['server_error', 'Overloaded (mock)', null],
};
const ANTHROPIC_ERR = {
  400: 'invalid_request_error', 401: 'authentication_error', 429: 'rate_limit_error', 500: 'api_error',
  529: 'overloaded_error',
};
const GEMINI_ERR = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL',
  529: 'UNAVAILABLE' };

function errorStatus(sc) { return /^\d{3}$/.test(sc) ? Number(sc) : 0; }
const RETRY = (status) => {
  if (knobs.retry_after !== undefined && knobs.status === status) return { 'retry-after': String(knobs.retry_after) };
  return status === 429 ? { 'retry-after': '7' } : {};
};

// ---------------------------------------------------------------- OpenAI
function openaiChat(req, res, body, sc, rec) {
  const st = errorStatus(sc);
  if (!req.headers.authorization || !/^Bearer \S+/.test(req.headers.authorization)) {
    const e = OPENAI_ERR[401];
    return json(res, 401, { error: { message: e[1], type: e[0], param: null, code: e[2] } });
  }
  if (st) {
    const e = OPENAI_ERR[st] || OPENAI_ERR[500];
    return json(res, st, { error: { message: e[1], type: e[0], param: null, code: e[2] } }, RETRY(st));
  }
  const model = body.model || 'gpt-mock';
  const cid = id('chatcmpl-');
  const created = Math.floor(Date.now() / 1000);
  const tool = firstTool(body);
  const usage = sc === 'nousage' ? undefined : USAGE.openai;
  rec.usage = usage;
  if (!body.stream) {
    const message = tool
      ? { role: 'assistant', content: null, refusal: null,
          tool_calls: [{ id: 'call_mock1', type: 'function', function: { name: tool, arguments: JSON.stringify(TOOL_ARGS) } }] }
      : { role: 'assistant', content: TEXT.join(''), refusal: null };
    const out = { id: cid, object: 'chat.completion', created, model,
      choices: [{ index: 0, message, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' }],
      system_fingerprint: 'fp_mock' };
    if (usage) out.usage = usage;
    return json(res, 200, out);
  }
  const withUsage = body.stream_options && body.stream_options.include_usage && usage;
  const base = { id: cid, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_mock' };
  const ev = (choices, extra) => `data: ${JSON.stringify(Object.assign({}, base, { choices }, withUsage ? { usage: null } : {}, extra || {}))}\n\n`;
  const events = [ev([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }])];
  if (tool) {
    events.push(ev([{ index: 0, delta: { tool_calls: [{ index: 0, id: 'call_mock1', type: 'function', function: { name: tool, arguments: '' } }] }, logprobs: null, finish_reason: null }]));
    const args = JSON.stringify(TOOL_ARGS);
    for (const part of [args.slice(0, 10), args.slice(10, 20), args.slice(20)]) {
      events.push(ev([{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: part } }] }, logprobs: null, finish_reason: null }]));
    }
  } else {
    for (const t of TEXT) events.push(ev([{ index: 0, delta: { content: t }, logprobs: null, finish_reason: null }]));
  }
  events.push(ev([{ index: 0, delta: {}, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' }]));
  if (withUsage) events.push(`data: ${JSON.stringify(Object.assign({}, base, { choices: [], usage }))}\n\n`);
  events.push('data: [DONE]\n\n');
  const errEv = `data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request (mock)', type: 'server_error', param: null, code: null } })}\n\n`;
  sseStart(res);
  return play(res, events, sc, errEv);
}

function openaiCompletions(req, res, body, sc, rec) {
  const st = errorStatus(sc);
  if (st) {
    const e = OPENAI_ERR[st] || OPENAI_ERR[500];
    return json(res, st, { error: { message: e[1], type: e[0], param: null, code: e[2] } }, RETRY(st));
  }
  const usage = sc === 'nousage' ? undefined : { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 };
  rec.usage = usage;
  const base = { id: id('cmpl-'), object: 'text_completion', created: Math.floor(Date.now() / 1000), model: body.model || 'gpt-mock' };
  if (!body.stream) {
    return json(res, 200, Object.assign({}, base, { choices: [{ text: TEXT.join(''), index: 0, logprobs: null, finish_reason: 'stop' }] }, usage ? { usage } : {}));
  }
  const events = TEXT.map((t) => `data: ${JSON.stringify(Object.assign({}, base, { choices: [{ text: t, index: 0, logprobs: null, finish_reason: null }] }))}\n\n`);
  events.push(`data: ${JSON.stringify(Object.assign({}, base, { choices: [{ text: '', index: 0, logprobs: null, finish_reason: 'stop' }] }))}\n\n`);
  if (body.stream_options && body.stream_options.include_usage && usage) events.push(`data: ${JSON.stringify(Object.assign({}, base, { choices: [], usage }))}\n\n`);
  events.push('data: [DONE]\n\n');
  sseStart(res);
  return play(res, events, sc, 'data: {"error":{"message":"mock failure","type":"server_error"}}\n\n');
}

function vector(i, dims) {
  const v = new Float32Array(dims || 8);
  for (let k = 0; k < v.length; k++) v[k] = Math.round(((i + 1) * (k + 1) % 7) / 7 * 1000) / 1000;
  return v;
}

function openaiEmbeddings(req, res, body, sc, rec) {
  const st = errorStatus(sc);
  if (st) {
    const e = OPENAI_ERR[st] || OPENAI_ERR[500];
    return json(res, st, { error: { message: e[1], type: e[0], param: null, code: e[2] } }, RETRY(st));
  }
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const b64 = body.encoding_format === 'base64';
  const data = inputs.map((_, i) => {
    const v = vector(i, body.dimensions);
    return { object: 'embedding', index: i, embedding: b64 ? Buffer.from(v.buffer).toString('base64') : Array.from(v) };
  });
  rec.usage = USAGE.embeddings;
  return json(res, 200, { object: 'list', data, model: body.model || 'text-embedding-mock', usage: USAGE.embeddings });
}

function openaiModels(req, res) {
  return json(res, 200, { object: 'list', data: [{ id: 'gpt-mock', object: 'model', created: 0, owned_by: 'mock' }] });
}

// ---------------------------------------------------------------- Anthropic
function anthropicMessages(req, res, body, sc, rec) {
  const st = errorStatus(sc);
  if (!req.headers['x-api-key']) {
    return json(res, 401, { type: 'error', error: { type: 'authentication_error', message: 'x-api-key header is required' } });
  }
  if (!req.headers['anthropic-version']) {
    return json(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'anthropic-version header is required' } });
  }
  if (!body.max_tokens) {
    return json(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens: Field required' } });
  }
  if (st) {
    return json(res, st, { type: 'error', error: { type: ANTHROPIC_ERR[st] || 'api_error', message: `mock ${st}` } }, RETRY(st));
  }
  const model = body.model || 'claude-mock';
  const mid = id('msg_');
  const tool = firstTool(body);
  const usage = USAGE.anthropic;
  rec.usage = sc === 'nousage' ? undefined : usage;
  if (!body.stream) {
    const content = tool
      ? [{ type: 'text', text: 'Let me check.' }, { type: 'tool_use', id: 'toolu_mock1', name: tool, input: TOOL_ARGS }]
      : [{ type: 'text', text: TEXT.join('') }];
    return json(res, 200, { id: mid, type: 'message', role: 'assistant', model, content,
      stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null, usage });
  }
  const ev = (name, data) => `event: ${name}\ndata: ${JSON.stringify(Object.assign({ type: name }, data))}\n\n`;
  const events = [
    ev('message_start', { message: { id: mid, type: 'message', role: 'assistant', model, content: [], stop_reason: null,
      stop_sequence: null, usage: Object.assign({}, usage, { output_tokens: 1 }) } }),
    ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    ev('ping', {}),
  ];
  if (tool) {
    events.push(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Let me check.' } }));
    events.push(ev('content_block_stop', { index: 0 }));
    events.push(ev('content_block_start', { index: 1, content_block: { type: 'tool_use', id: 'toolu_mock1', name: tool, input: {} } }));
    const args = JSON.stringify(TOOL_ARGS);
    for (const part of ['', args.slice(0, 12), args.slice(12)]) {
      events.push(ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: part } }));
    }
    events.push(ev('content_block_stop', { index: 1 }));
  } else {
    for (const t of TEXT) events.push(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } }));
    events.push(ev('content_block_stop', { index: 0 }));
  }
  events.push(ev('message_delta', { delta: { stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null },
    usage: { output_tokens: usage.output_tokens } }));
  events.push(ev('message_stop', {}));
  sseStart(res);
  return play(res, events, sc, ev('error', { error: { type: 'overloaded_error', message: 'Overloaded (mock)' } }));
}

// ---------------------------------------------------------------- Gemini
function gemini(req, res, body, sc, rec, url) {
  const st = errorStatus(sc);
  const key = req.headers['x-goog-api-key'] || url.searchParams.get('key');
  if (!key) return json(res, 401, { error: { code: 401, message: 'API key not valid (mock)', status: 'UNAUTHENTICATED' } });
  if (st) return json(res, st, { error: { code: st, message: `mock ${st}`, status: GEMINI_ERR[st] || 'INTERNAL' } }, RETRY(st));
  const m = url.pathname.match(/models\/([^/:]+):(\w+)$/);
  const model = m ? m[1] : 'gemini-mock';
  const method = m ? m[2] : 'generateContent';
  if (method === 'embedContent') {
    return json(res, 200, { embedding: { values: Array.from(vector(0)) } });
  }
  const tool = firstTool(body);
  const usage = sc === 'nousage' ? undefined : USAGE.gemini;
  rec.usage = usage;
  const cand = (parts, finish) => Object.assign({ content: { parts, role: 'model' }, index: 0 }, finish ? { finishReason: finish } : {});
  if (method === 'generateContent') {
    const parts = tool ? [{ functionCall: { name: tool, args: TOOL_ARGS } }] : [{ text: TEXT.join('') }];
    return json(res, 200, Object.assign({ candidates: [cand(parts, 'STOP')], modelVersion: model, responseId: id('gem') }, usage ? { usageMetadata: usage } : {}));
  }
  const chunks = tool
    ? [[{ functionCall: { name: tool, args: TOOL_ARGS } }]]
    : [[{ text: TEXT[0] }], [{ text: TEXT[1] + TEXT[2] }], [{ text: TEXT[3] }], [{ text: TEXT[4] }]];
  const events = chunks.map((parts, i) => {
    const last = i === chunks.length - 1;
    const o = { candidates: [cand(parts, last ? 'STOP' : null)], modelVersion: model };
    if (usage) o.usageMetadata = last ? usage : { promptTokenCount: usage.promptTokenCount, totalTokenCount: usage.promptTokenCount };
    return `data: ${JSON.stringify(o)}\r\n\r\n`;
  });
  sseStart(res);
  return play(res, events, sc, `data: ${JSON.stringify({ error: { code: 503, message: 'overloaded (mock)', status: 'UNAVAILABLE' } })}\r\n\r\n`);
}

// ---------------------------------------------------------------- server
const server = http.createServer((req, res) => {
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://mock');
    const raw = Buffer.concat(parts).toString('utf8');
    if (url.pathname === '/__requests') return json(res, 200, requests);
    if (url.pathname === '/__reset') { requests.length = 0; return json(res, 200, { ok: true }); }
    if (url.pathname === '/__health') return json(res, 200, { ok: true });
    if (url.pathname === '/__config') {
      if (req.method === 'POST') {
        try { knobs = JSON.parse(raw || '{}') || {}; } catch (e) { return json(res, 400, { error: String(e) }); }
      }
      return json(res, 200, knobs);
    }
    let body = {};
    let parsed = raw;
    if (raw) {
      try { body = JSON.parse(raw); parsed = body; } catch (e) { body = null; }
    }
    let sc = scenarioOf(req, url);
    if (knobs.status && (knobs.fail_rate === undefined || Math.random() < knobs.fail_rate)) sc = String(knobs.status);
    if (knobs.stream_fail === 'after' && sc === 'ok') sc = 'midfail';
    const rec = { method: req.method, path: req.url, headers: req.headers, body: parsed, scenario: sc };
    requests.push(rec);
    res.on('close', () => { if (!res.writableEnded) rec.aborted = true; }); // the client (gateway) went away
    if (body === null) return json(res, 400, { error: { message: 'We could not parse the JSON body of your request (mock)', type: 'invalid_request_error', param: null, code: null } });
    if (knobs.down) { rec.cut = true; return req.socket.destroy(); }
    if (sc === 'hang') return; // never answers
    if (knobs.latency_ms) await sleep(knobs.latency_ms);
    if (knobs.stream_fail === 'before' && body && body.stream && !errorStatus(sc)) {
      rec.cut = true;
      sseStart(res);
      res.flushHeaders();
      return setTimeout(() => res.socket && res.socket.destroy(), 5);
    }
    if (sc === 'slow') await sleep(150);
    const p = url.pathname;
    try {
      if (p.endsWith('/chat/completions')) return await openaiChat(req, res, body, sc, rec);
      if (p.endsWith('/completions')) return await openaiCompletions(req, res, body, sc, rec);
      if (p.endsWith('/embeddings')) return openaiEmbeddings(req, res, body, sc, rec);
      if (p.endsWith('/models') && req.method === 'GET') return openaiModels(req, res);
      if (p.endsWith('/messages')) return await anthropicMessages(req, res, body, sc, rec);
      if (/models\/[^/]+:\w+$/.test(p)) return await gemini(req, res, body, sc, rec, url);
    } catch (e) {
      if (!res.headersSent) return json(res, 500, { error: { message: String(e), type: 'server_error' } });
      return res.destroy();
    }
    return json(res, 404, { error: { message: `mock: no endpoint ${req.method} ${p}`, type: 'invalid_request_error' } });
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
