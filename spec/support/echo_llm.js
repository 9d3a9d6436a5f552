// An OpenAI-wire provider for the content-safety specs: it answers with what it was sent, so a spec sees exactly
// what left the gateway (masked prompts) and what came back (restored answers), streamed in pieces of a chosen size.
// usage: node echo_llm.js PORT_FILE        (listens on a free port, or SLUICE_SPEC_PORT; writes the port to PORT_FILE)
//
//   POST .../chat/completions   the answer's text is the last user message's text (string or text parts), or the
//                               x-echo-text header; a request offering tools gets a call of the first tool with
//                               arguments {"text": <that text>}. Streams split the text (or the arguments) into
//                               pieces of x-chunk bytes (default 4), one event each, x-delay-ms apart (default 0),
//                               then a finish chunk, a usage chunk and [DONE]. x-escape: 1 writes '<' and '>' as
//                               \u003c / \u003e (as some servers' JSON encoders do).
//   POST .../moderations        OpenAI moderation results: a category scores 0.9 when one of its words is in the
//                               input (violence: kill, murder, bomb; harassment: idiot; hate: hateful slur), else
//                               0.01. x-mod-status: answer with that status; x-mod-delay-ms: wait first.
//   GET /_requests              every API request so far: [{path, headers, body}]
//   GET /_stats                 {streams, finished, aborted}: streams begun, written to the end, cut by the gateway
//   POST /_reset                forgets requests and counters
'use strict';
const http = require('http');
const fs = require('fs');

const portFile = process.argv[2];
const requests = [];
const stats = { streams: 0, finished: 0, aborted: 0 };
const WORDS = { violence: ['kill', 'murder', 'bomb'], harassment: ['idiot'], hate: ['hateful slur'] };
const CATS = ['harassment', 'harassment/threatening', 'hate', 'hate/threatening', 'illicit', 'illicit/violent',
  'self-harm', 'self-harm/intent', 'self-harm/instructions', 'sexual', 'sexual/minors', 'violence',
  'violence/graphic'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function textOf(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.filter((p) => p && p.type === 'text').map((p) => p.text).join('\n');
  return '';
}

function lastUser(body) {
  const msgs = Array.isArray(body.messages) ? body.messages : [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i] && msgs[i].role === 'user') return textOf(msgs[i].content);
  }
  return '';
}

function pieces(s, n) {
  const out = [];
  const b = Buffer.from(s);
  for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n).toString('utf8'));
  return out.length ? out : [''];
}

async function chat(req, res, body) {
  const text = req.headers['x-echo-text'] !== undefined ? decodeURIComponent(req.headers['x-echo-text'])
    : lastUser(body);
  const tools = Array.isArray(body.tools) && body.tools.length > 0 ? body.tools : null;
  const base = { id: 'chatcmpl-echo', object: 'chat.completion.chunk', created: 1700000000, model: body.model || 'm' };
  const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
  const args = tools ? JSON.stringify({ text }) : null;
  if (!body.stream) {
    const message = tools
      ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
          function: { name: tools[0].function.name, arguments: args } }] }
      : { role: 'assistant', content: text };
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ ...base, object: 'chat.completion', usage,
      choices: [{ index: 0, message, finish_reason: tools ? 'tool_calls' : 'stop', logprobs: null }] }));
  }
  stats.streams++;
  let aborted = false;
  res.on('close', () => { if (!res.writableEnded) { aborted = true; stats.aborted++; } });
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const n = Math.max(1, Number(req.headers['x-chunk'] || 4));
  const delay = Number(req.headers['x-delay-ms'] || 0);
  const esc = req.headers['x-escape'] === '1';
  const json = (o) => (esc ? JSON.stringify(o).replace(/</g, '\\u003c').replace(/>/g, '\\u003e') : JSON.stringify(o));
  const send = (o) => res.write(`data: ${json(o)}\n\n`);
  send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
  if (tools) {
    send({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'call_1', type: 'function',
      function: { name: tools[0].function.name, arguments: '' } }] }, finish_reason: null }] });
  }
  for (const p of pieces(tools ? args : text, n)) {
    if (delay) await sleep(delay);
    if (aborted) return;
    const delta = tools ? { tool_calls: [{ index: 0, function: { arguments: p } }] } : { content: p };
    send({ ...base, choices: [{ index: 0, delta, finish_reason: null }] });
  }
  if (delay) await sleep(delay);
  if (aborted) return;
  send({ ...base, choices: [{ index: 0, delta: {}, finish_reason: tools ? 'tool_calls' : 'stop' }] });
  send({ ...base, choices: [], usage });
  res.write('data: [DONE]\n\n');
  stats.finished++;
  res.end();
}

async function moderations(req, res, body) {
  const delay = Number(req.headers['x-mod-delay-ms'] || 0);
  if (delay) await sleep(delay);
  const status = Number(req.headers['x-mod-status'] || 200);
  res.setHeader('content-type', 'application/json');
  if (status !== 200) {
    res.statusCode = status;
    return res.end(JSON.stringify({ error: { message: 'moderation failed', type: 'server_error' } }));
  }
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const results = inputs.map((t) => {
    const low = String(t || '').toLowerCase();
    const categories = {};
    const scores = {};
    let flagged = false;
    for (const c of CATS) {
      const hit = (WORDS[c] || []).some((w) => low.includes(w));
      categories[c] = hit;
      scores[c] = hit ? 0.9 : 0.01;
      flagged = flagged || hit;
    }
    return { flagged, categories, category_scores: scores };
  });
  res.end(JSON.stringify({ id: 'modr-echo', model: body.model || 'omni-moderation-latest', results }));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString();
    const path = req.url.split('?')[0];
    if (path === '/_requests') {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify(requests));
    }
    if (path === '/_stats') {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify(stats));
    }
    if (path === '/_reset') {
      requests.length = 0;
      stats.streams = 0; stats.finished = 0; stats.aborted = 0;
      return res.end('{}');
    }
    let body = {};
    try { body = raw ? JSON.parse(raw) : {}; } catch (e) { body = { unparsed: raw }; }
    requests.push({ path, headers: req.headers, body });
    if (path.endsWith('/chat/completions')) return chat(req, res, body);
    if (path.endsWith('/moderations')) return moderations(req, res, body);
    res.statusCode = 404;
    res.end(JSON.stringify({ error: { message: 'no such endpoint ' + path } }));
  });
});

server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => {
  fs.writeFileSync(portFile, String(server.address().port));
});
