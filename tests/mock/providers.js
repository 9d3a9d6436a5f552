// Mock LLM providers for specs and end-to-end tests: the OpenAI, Azure OpenAI, DeepSeek, Anthropic, Gemini and
// Bedrock (Converse) wire formats in one process.
//
// usage: node tests/mock/providers.js PORT [--lax]   (PORT 0: any free port; the port is printed as "listening PORT")
//
// Endpoints (matched on the path, so any base path in front works):
//   OpenAI     POST .../v1/chat/completions, .../completions, .../embeddings (float or base64), GET .../models
//   Azure      POST .../openai/deployments/D/chat/completions?api-version=V  (prompt_filter_results, content filter
//              chunks as Azure streams them: a first chunk with choices: [])
//   DeepSeek   POST .../k/deepseek/chat/completions (DeepSeek has no /v1 prefix: the /k/deepseek segment says which)
//   Anthropic  POST .../messages                       (needs x-api-key and anthropic-version headers)
//   Gemini     POST .../models/M:generateContent, .../models/M:streamGenerateContent?alt=sse, :embedContent;
//              Gemini 3 models (M = gemini-3...) put a thoughtSignature on functionCall parts and, strict, reject a
//              replayed call whose signature they did not issue
//   Bedrock    POST .../model/M/converse, .../model/M/converse-stream (AWS event-stream framing with both CRCs,
//              written in 37-byte pieces); SigV4 is verified here, independently of the gateway's signer, for the
//              access key AKIDMOCKPROVIDER / secret MOCK/secret+KEY (any region); Bearer keys are accepted
// A path segment "/k/KIND/" names the provider kind where the path alone does not (deepseek, openai-compatible).
//
// Strict mode (the default; --lax, MOCK_LAX=1 or the knob {strict: false} turn it off): every API request is
// checked by the same validators the driver specs use (spec/ai/validators/<kind>.lua, run by
// spec/ai/validators/serve.lua under luajit), and one the provider would reject is answered with that
// provider's 400 listing the errors (also in /__requests as `invalid`).
//
// A conversation whose last turn carries tool results gets a text answer; otherwise a request offering tools
// gets a call of the first tool.
//
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
// Test hooks: GET /__requests -> every request so far [{method, path, headers, body (parsed JSON when it is), raw,
// scenario, kind, usage, aborted, invalid}], POST /__reset forgets them, GET /__health.
// Per-instance knobs (for multi-provider specs), POST /__config with a JSON object (replaces the knobs; {} = none),
// GET /__config reads them; they apply to every API request of this instance:
//   latency_ms    wait before answering (and before the head of a stream)
//   status        answer with this error status (the provider's error body), e.g. 429 or 500 ...
//   fail_rate     ... only for this fraction of requests (0..1; default 1)
//   retry_after   the retry-after header sent with status (seconds; default 7 for 429, none otherwise)
//   stream_fail   "before": streams get the 200 head, then the connection is cut before any event;
//                 "after": streams fail after a few events (as the midfail scenario)
//   down          true: every API request's connection is cut at once (a dead provider)
//   strict        false: no request validation
'use strict';
const http = require('http');
const crypto = require('crypto');
const zlib = require('zlib');
const path = require('path');
const { spawn } = require('child_process');

const port = Number(process.argv[2] || 0);
const LAX = process.argv.includes('--lax') || process.env.MOCK_LAX === '1';
const ROOT = path.resolve(__dirname, '../..');
const USAGE = {
  openai: { prompt_tokens: 17, completion_tokens: 5, total_tokens: 22, prompt_tokens_details: { cached_tokens: 3 },
            completion_tokens_details: { reasoning_tokens: 0 } },
  anthropic: { input_tokens: 21, output_tokens: 7, cache_creation_input_tokens: 0, cache_read_input_tokens: 4 },
  gemini: { promptTokenCount: 13, candidatesTokenCount: 6, totalTokenCount: 19 },
  bedrock: { inputTokens: 11, outputTokens: 4, totalTokens: 15 },
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
  const bt = body.toolConfig && Array.isArray(body.toolConfig.tools) && body.toolConfig.tools[0];
  if (bt && bt.toolSpec) return bt.toolSpec.name;       // Bedrock
  const t = Array.isArray(body.tools) && body.tools[0];
  if (!t) return null;
  if (t.function) return t.function.name;               // OpenAI
  if (t.name) return t.name;                            // Anthropic
  if (t.functionDeclarations) return t.functionDeclarations[0].name; // Gemini
  return null;
}

// True when the conversation's last turn carries tool results: the model then answers in text.
function toolResultsLast(body) {
  const last = (list) => (Array.isArray(list) && list.length ? list[list.length - 1] : null);
  const m = last(body.messages);
  if (m && m.role === 'tool') return true;                                                   // OpenAI wire
  if (m && Array.isArray(m.content) && m.content.some((b) => b && (b.type === 'tool_result' || b.toolResult))) {
    return true;                                                                             // Anthropic, Bedrock
  }
  const c = last(body.contents);
  return !!(c && Array.isArray(c.parts) && c.parts.some((p) => p && p.functionResponse));   // Gemini
}
const wantsTool = (body) => (toolResultsLast(body) ? null : firstTool(body));
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

// ---------------------------------------------------------------- OpenAI (Azure OpenAI and DeepSeek too)
const AZURE_FILTER = { hate: { filtered: false, severity: 'safe' }, self_harm: { filtered: false, severity: 'safe' },
  sexual: { filtered: false, severity: 'safe' }, violence: { filtered: false, severity: 'safe' } };
function openaiChat(req, res, body, sc, rec, azure) {
  const st = errorStatus(sc);
  if (!azure && (!req.headers.authorization || !/^Bearer \S+/.test(req.headers.authorization))) {
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
  const tool = wantsTool(body);
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
    if (azure) {
      out.prompt_filter_results = [{ prompt_index: 0, content_filter_results: AZURE_FILTER }];
      out.choices[0].content_filter_results = AZURE_FILTER;
    }
    return json(res, 200, out);
  }
  const withUsage = body.stream_options && body.stream_options.include_usage && usage;
  const base = { id: cid, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_mock' };
  const ev = (choices, extra) => {
    if (azure) for (const c of choices) c.content_filter_results = c.delta && c.delta.content ? AZURE_FILTER : {};
    return `data: ${JSON.stringify(Object.assign({}, base, { choices }, withUsage ? { usage: null } : {}, extra || {}))}\n\n`;
  };
  const events = [ev([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }])];
  if (azure) { // Azure's first chunk: the prompt's content filter results, no choices, no usage
    events.unshift(`data: ${JSON.stringify({ choices: [], created: 0, id: '', model: '', object: '',
      prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER }] })}\n\n`);
  }
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
  const tool = wantsTool(body);
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
  if (method === 'batchEmbedContents') {
    const n = Array.isArray(body.requests) ? body.requests.length : 0;
    return json(res, 200, { embeddings: Array.from({ length: n }, (_, i) => ({ values: Array.from(vector(i)) })) });
  }
  const tool = wantsTool(body);
  const usage = sc === 'nousage' ? undefined : USAGE.gemini;
  rec.usage = usage;
  const cand = (parts, finish) => Object.assign({ content: { parts, role: 'model' }, index: 0 }, finish ? { finishReason: finish } : {});
  const call = () => {
    const part = { functionCall: { name: tool, args: TOOL_ARGS } };
    if (/^gemini-([3-9]|\d\d)/.test(model)) { // Gemini 3 signs its function calls
      part.thoughtSignature = crypto.randomBytes(33).toString('base64');
      signatures.add(part.thoughtSignature);
    }
    return part;
  };
  if (method === 'generateContent') {
    const parts = tool ? [call()] : [{ text: TEXT.join('') }];
    return json(res, 200, Object.assign({ candidates: [cand(parts, 'STOP')], modelVersion: model, responseId: id('gem') }, usage ? { usageMetadata: usage } : {}));
  }
  const chunks = tool
    ? [[call()]]
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

// ---------------------------------------------------------------- Bedrock (Converse, ConverseStream)
const AWS_SECRETS = { AKIDMOCKPROVIDER: 'MOCK/secret+KEY' };

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();
function crc32(buf) {
  let c = -1;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// One AWS event-stream message (application/vnd.amazon.eventstream) with string headers.
function esMessage(headers, payload) {
  const hs = headers.map(([n, v]) => {
    const nb = Buffer.from(n);
    const vb = Buffer.from(v);
    const b = Buffer.alloc(4 + nb.length + vb.length);
    b[0] = nb.length;
    nb.copy(b, 1);
    b[1 + nb.length] = 7;
    b.writeUInt16BE(vb.length, 2 + nb.length);
    vb.copy(b, 4 + nb.length);
    return b;
  });
  const hb = Buffer.concat(hs);
  const pb = Buffer.from(payload);
  const prelude = Buffer.alloc(12);
  prelude.writeUInt32BE(12 + hb.length + pb.length + 4, 0);
  prelude.writeUInt32BE(hb.length, 4);
  prelude.writeUInt32BE(crc32(prelude.subarray(0, 8)), 8);
  const msg = Buffer.concat([prelude, hb, pb]);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(crc32(msg), 0);
  return Buffer.concat([msg, tail]);
}
const esEvent = (type, data) => esMessage([[':event-type', type], [':content-type', 'application/json'],
  [':message-type', 'event']], JSON.stringify(Object.assign({}, data, { p: 'abcdefghijklmnopqrstuvwxyzABCDEFGH' })));

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const hmac = (k, s) => crypto.createHmac('sha256', k).update(s).digest();
const awsEncode = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

// Verifies a SigV4 Authorization header over the request as received; returns an error message or null.
function sigv4Error(req, raw) {
  const a = req.headers.authorization || '';
  if (/^Bearer \S+$/.test(a)) return null;
  const m = a.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/);
  if (!m) return 'Authorization header requires a valid SigV4 Credential, SignedHeaders and Signature';
  const [, ak, date, region, service, signed, signature] = m;
  const secret = AWS_SECRETS[ak];
  if (!secret) return 'The security token included in the request is invalid.';
  const amzDate = req.headers['x-amz-date'] || '';
  if (!amzDate.startsWith(date)) return 'x-amz-date does not match the credential scope date';
  const t = Date.UTC(+amzDate.slice(0, 4), +amzDate.slice(4, 6) - 1, +amzDate.slice(6, 8), +amzDate.slice(9, 11),
    +amzDate.slice(11, 13), +amzDate.slice(13, 15));
  if (!(Math.abs(Date.now() - t) < 15 * 60 * 1000)) return 'Signature expired: ' + amzDate + ' is not within 15 minutes';
  const [rawPath, rawQuery = ''] = req.url.split('?');
  const uri = rawPath.split('/').map((seg) => awsEncode(seg)).join('/');
  const query = rawQuery.split('&').filter(Boolean).map((kv) => {
    const [k, v = ''] = kv.split('=');
    return [awsEncode(decodeURIComponent(k)), awsEncode(decodeURIComponent(v))];
  }).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : 1)).map((p) => p.join('=')).join('&');
  const names = signed.split(';');
  for (const n of ['host', 'x-amz-date']) if (!names.includes(n)) return `SignedHeaders must include ${n}`;
  const canonHeaders = names.map((n) => `${n}:${String(req.headers[n] || '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonical = [req.method, uri, query, canonHeaders, signed, sha256(raw)].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const sts = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
  const want = crypto.createHmac('sha256', key).update(sts).digest('hex');
  if (want !== signature) {
    return 'The request signature we calculated does not match the signature you provided. Check your AWS Secret '
      + 'Access Key and signing method.';
  }
  return null;
}

const BEDROCK_ERR = { 400: 'ValidationException', 403: 'AccessDeniedException', 429: 'ThrottlingException',
  500: 'InternalServerException', 529: 'ServiceUnavailableException' };
function bedrockError(res, status, type, message, headers) {
  return json(res, status, { message }, Object.assign({ 'x-amzn-errortype': `${type}:http://internal.amazon.com/coral/com.amazon.bedrock/` }, headers || {}));
}

async function bedrock(req, res, body, sc, rec, url) {
  const st = errorStatus(sc);
  if (st) return bedrockError(res, st === 529 ? 503 : st, BEDROCK_ERR[st] || 'InternalServerException', `mock ${st}`, RETRY(st));
  const stream = /\/converse-stream$/.test(url.pathname);
  const tool = wantsTool(body);
  const usage = sc === 'nousage' ? undefined : USAGE.bedrock;
  rec.usage = usage;
  const content = tool
    ? [{ toolUse: { toolUseId: 'tooluse_mock1', name: tool, input: TOOL_ARGS } }]
    : [{ text: TEXT.join('') }];
  const stopReason = tool ? 'tool_use' : 'end_turn';
  if (!stream) {
    return json(res, 200, Object.assign({ output: { message: { role: 'assistant', content } }, stopReason,
      metrics: { latencyMs: 12 } }, usage ? { usage } : {}));
  }
  const events = [esEvent('messageStart', { role: 'assistant' })];
  if (tool) {
    events.push(esEvent('contentBlockStart', { contentBlockIndex: 0, start: { toolUse: { toolUseId: 'tooluse_mock1', name: tool } } }));
    const args = JSON.stringify(TOOL_ARGS);
    for (const part of [args.slice(0, 9), args.slice(9)]) {
      events.push(esEvent('contentBlockDelta', { contentBlockIndex: 0, delta: { toolUse: { input: part } } }));
    }
  } else {
    for (const t of TEXT) events.push(esEvent('contentBlockDelta', { contentBlockIndex: 0, delta: { text: t } }));
  }
  events.push(esEvent('contentBlockStop', { contentBlockIndex: 0 }));
  events.push(esEvent('messageStop', { stopReason }));
  events.push(esEvent('metadata', Object.assign({ metrics: { latencyMs: 12 } }, usage ? { usage } : {})));
  const errEv = esMessage([[':exception-type', 'throttlingException'], [':content-type', 'application/json'],
    [':message-type', 'exception']], JSON.stringify({ message: 'Too many requests (mock)' }));
  res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': id('req-') });
  // the frames go out in 37-byte pieces: the decoder must put them back together across CRCs and headers
  // (midfail cuts the connection inside a frame; midfail-event sends an exception message after three events)
  const bytes = sc === 'midfail-event' ? Buffer.concat([...events.slice(0, 3), errEv]) : Buffer.concat(events);
  const pieces = [];
  for (let i = 0; i < bytes.length; i += 37) pieces.push(bytes.subarray(i, i + 37));
  return play(res, pieces, sc === 'midfail-event' ? 'ok' : sc, errEv);
}

// ---------------------------------------------------------------- strict validation (spec/ai/validators)
let validator = null;
const pending = new Map();
let vseq = 0;
function validatorProcess() {
  if (validator) return validator;
  const p = spawn('luajit', [path.join(ROOT, 'spec/ai/validators/serve.lua')], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let msg;
      try { msg = JSON.parse(line); } catch (e) { continue; }
      const cb = pending.get(msg.id);
      if (cb) { pending.delete(msg.id); cb(msg.errors || []); }
    }
  });
  const fail = () => {
    validator = null;
    for (const [k, cb] of pending) { pending.delete(k); cb(['mock: the validator process is gone']); }
  };
  p.on('exit', fail);
  p.on('error', fail);
  validator = p;
  return p;
}
function validate(kind, req) {
  return new Promise((resolve) => {
    const idn = ++vseq;
    pending.set(idn, resolve);
    validatorProcess().stdin.write(JSON.stringify({ id: idn, kind, req }) + '\n');
  });
}

// The provider kind of a request: a /k/KIND segment, else what the path says.
function kindOf(url, p) {
  const m = url.pathname.match(/\/k\/([\w-]+)(\/|$)/);
  if (m) return m[1];
  if (/\/openai\/deployments\/|\/openai\/models$/.test(p)) return 'azure-openai';
  if (/\/model\/[^/]+\/converse(-stream)?$/.test(p)) return 'bedrock';
  if (/models\/[^/]+:\w+$/.test(p) || /\/v1beta\/models$/.test(p)) return 'gemini';
  if (p.endsWith('/messages')) return 'anthropic';
  return 'openai';
}

// The answer a provider gives to a request it rejects (strict errors, a signature it did not issue).
function reject(res, kind, status, message) {
  if (kind === 'anthropic') return json(res, status, { type: 'error', error: { type: 'invalid_request_error', message } });
  if (kind === 'gemini') return json(res, status, { error: { code: status, message, status: 'INVALID_ARGUMENT' } });
  if (kind === 'bedrock') return bedrockError(res, status, status === 403 ? 'InvalidSignatureException' : 'ValidationException', message);
  return json(res, status, { error: { message, type: 'invalid_request_error', param: null, code: null } });
}

// Gemini 3 accepts only signatures it issued (or the documented placeholder for calls that have none).
const signatures = new Set();
function signatureError(body) {
  for (const c of (body && Array.isArray(body.contents) ? body.contents : [])) {
    for (const part of (c && Array.isArray(c.parts) ? c.parts : [])) {
      const sig = part && part.thoughtSignature;
      if (sig && part.functionCall && !signatures.has(sig) && sig !== 'skip_thought_signature_validator') {
        return 'Corrupted thought signature.';
      }
    }
  }
  return null;
}

// ---------------------------------------------------------------- server
const server = http.createServer((req, res) => {
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://mock');
    const rawBytes = Buffer.concat(parts);
    const raw = rawBytes.toString('utf8');
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
    const p = url.pathname.replace(/\/[sk]\/[\w-]+(?=\/|$)/g, '') || '/';
    const kind = kindOf(url, p);
    const rec = { method: req.method, path: req.url, headers: req.headers, body: parsed, raw, scenario: sc, kind };
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
    if (!LAX && knobs.strict !== false) {
      if (kind === 'bedrock') {
        const e = sigv4Error(req, rawBytes);
        if (e) { rec.invalid = [e]; return reject(res, kind, 403, e); }
      }
      const errors = await validate(kind, { method: req.method, path: p + url.search, headers: req.headers, body: raw });
      if (errors.length) {
        rec.invalid = errors;
        process.stderr.write(`rejected ${kind} ${req.method} ${req.url}: ${errors.join('; ')}\n`);
        return reject(res, kind, 400, errors.join('; '));
      }
      const se = kind === 'gemini' && signatureError(body);
      if (se) { rec.invalid = [se]; return reject(res, kind, 400, se); }
    }
    try {
      if (kind === 'bedrock') return await bedrock(req, res, body, sc, rec, url);
      if (kind === 'azure-openai' && p.endsWith('/chat/completions')) return await openaiChat(req, res, body, sc, rec, true);
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
const quit = () => { if (validator) validator.kill(); process.exit(0); };
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
