// ai-cache with the official SDKs (env GATEWAY_A, GATEWAY_B, MOCK set by tests/e2e/cache.sh): every hit must parse
// in the SDK as any answer does and carry the same text and usage as the miss that stored it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import net from 'node:net';

const A = process.env.GATEWAY_A;
const B = process.env.GATEWAY_B;
const MOCK = process.env.MOCK;
const MC_PORT = Number(process.env.MEMCACHED_PORT);
const openai = (gw, route = 'openai') => new OpenAI({ baseURL: `${gw}/${route}/v1`, apiKey: 'k', maxRetries: 0 });
const claude = (gw, route = 'openai') => new Anthropic({ baseURL: `${gw}/${route}`, apiKey: 'k', maxRetries: 0 });
const chatReq = (q, extra = {}) => ({ model: 'gpt-4o-mini', temperature: 0, max_tokens: 64,
  messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: q }], ...extra });
const msgReq = (q, model = 'gpt-4o-mini', extra = {}) => ({ model, temperature: 0, max_tokens: 64, system: 'Be brief.',
  messages: [{ role: 'user', content: q }], ...extra });

async function upstreamCalls(q) {
  const all = await (await fetch(`${MOCK}/__requests`)).json();
  return all.filter((r) => {
    const m = r.body && r.body.messages;
    const last = m && m[m.length - 1];
    const c = last && (typeof last.content === 'string' ? last.content : last.content?.[0]?.text);
    return c === q;
  }).length;
}

// A miss is stored in the gateway's log phase, after its client got the answer: before another node can hit, the
// entry must have reached memcached. Polls memcached's text protocol for it (at most 5 s).
function mcHas(key) {
  return new Promise((resolve) => {
    const c = net.connect(MC_PORT, '127.0.0.1', () => c.write(`get sluice:cache:e:${key}\r\n`));
    let buf = '';
    c.setTimeout(1000, () => { c.destroy(); resolve(false); });
    c.on('data', (d) => { buf += d; if (buf.includes('\r\n')) { c.destroy(); resolve(buf.startsWith('VALUE')); } });
    c.on('error', () => resolve(false));
  });
}
async function inL2(key) {
  assert.match(key || '', /^[0-9a-f]{64}$/);
  for (let i = 0; i < 100; i++) {
    if (await mcHas(key)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`entry ${key} not in memcached after 5 s`);
}

async function chat(client, req) {
  const { data, response } = await client.chat.completions.create(req).withResponse();
  return { data, cache: response.headers.get('x-sluice-cache') };
}

async function chatStream(client, req) {
  const { data: stream, response } = await client.chat.completions.create({ ...req, stream: true,
    stream_options: { include_usage: true } }).withResponse();
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, usage, cache: response.headers.get('x-sluice-cache'), key: response.headers.get('x-sluice-cache-key') };
}

async function messagesStream(client, req) {
  const stream = client.messages.stream(req);
  let text = '';
  stream.on('text', (t) => { text += t; });
  const { response } = await stream.withResponse();
  const final = await stream.finalMessage();
  return { text, final, cache: response.headers.get('x-sluice-cache') };
}

test('openai: miss then hit, not streamed: same answer and usage', async () => {
  const q = 'sdk plain';
  const miss = await chat(openai(A), chatReq(q));
  assert.equal(miss.cache, 'MISS');
  const hit = await chat(openai(A), chatReq(q));
  assert.equal(hit.cache, 'HIT');
  assert.equal(hit.data.choices[0].message.content, 'Hello from the mock.');
  assert.deepEqual(hit.data.usage, miss.data.usage);
  assert.equal(await upstreamCalls(q), 1);
});

test('openai: streamed miss, then streamed and plain hits parse with the same text and usage', async () => {
  const q = 'sdk stream';
  const miss = await chatStream(openai(A), chatReq(q));
  assert.equal(miss.cache, 'MISS');
  assert.equal(miss.text, 'Hello from the mock.');
  const hit = await chatStream(openai(A), chatReq(q));
  assert.equal(hit.cache, 'HIT');
  assert.equal(hit.text, miss.text);
  assert.deepEqual(hit.usage, miss.usage);
  // the stream helper (runner) assembles the replayed stream too
  const final = await openai(A).chat.completions.stream(chatReq(q)).finalChatCompletion();
  assert.equal(final.choices[0].message.content, miss.text);
  const plain = await chat(openai(A), chatReq(q));
  assert.equal(plain.cache, 'HIT');
  assert.equal(plain.data.choices[0].message.content, miss.text);
  assert.deepEqual(plain.data.usage, miss.usage);
  assert.equal(await upstreamCalls(q), 1);
});

test('cross-format: an OpenAI client stores, the Anthropic SDK gets the answer (streamed and not)', async () => {
  const q = 'sdk cross';
  const miss = await chat(openai(A), chatReq(q));
  assert.equal(miss.cache, 'MISS');
  const { data: m, response } = await claude(A).messages.create(msgReq(q)).withResponse();
  assert.equal(response.headers.get('x-sluice-cache'), 'HIT');
  assert.equal(m.type, 'message');
  assert.equal(m.content[0].text, miss.data.choices[0].message.content);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.output_tokens, miss.data.usage.completion_tokens);
  assert.equal(m.usage.input_tokens + m.usage.cache_read_input_tokens, miss.data.usage.prompt_tokens);
  const s = await messagesStream(claude(A), msgReq(q));
  assert.equal(s.cache, 'HIT');
  assert.equal(s.text, miss.data.choices[0].message.content);
  assert.equal(s.final.usage.output_tokens, miss.data.usage.completion_tokens);
  assert.equal(await upstreamCalls(q), 1);
});

test('cross-format: the Anthropic SDK stores (Anthropic provider, streamed), the OpenAI SDK gets it', async () => {
  const q = 'sdk anthropic first';
  const miss = await messagesStream(claude(A, 'anthropic'), msgReq(q, 'claude-3-5-haiku'));
  assert.equal(miss.cache, 'MISS');
  assert.equal(miss.text, 'Hello from the mock.');
  const hit = await chat(openai(A, 'anthropic'), { ...chatReq(q), model: 'claude-3-5-haiku' });
  assert.equal(hit.cache, 'HIT');
  assert.equal(hit.data.choices[0].message.content, miss.text);
  assert.equal(hit.data.usage.completion_tokens, miss.final.usage.output_tokens);
  const again = await messagesStream(claude(A, 'anthropic'), msgReq(q, 'claude-3-5-haiku'));
  assert.equal(again.cache, 'HIT');
  assert.equal(again.text, miss.text);
  assert.equal(again.final.usage.output_tokens, miss.final.usage.output_tokens);
  assert.equal(again.final.usage.input_tokens, miss.final.usage.input_tokens);
  assert.equal(await upstreamCalls(q), 1);
});

test('two nodes sharing memcached: a miss on node A is a hit on node B, in both SDKs', async () => {
  const q = 'sdk two nodes';
  const miss = await chatStream(openai(A), chatReq(q));
  assert.equal(miss.cache, 'MISS');
  await inL2(miss.key);
  const hit = await chat(openai(B), chatReq(q));
  assert.equal(hit.cache, 'HIT');
  assert.equal(hit.data.choices[0].message.content, miss.text);
  assert.deepEqual(hit.data.usage, miss.usage);
  const m = await claude(B).messages.create(msgReq(q));
  assert.equal(m.content[0].text, miss.text);
  assert.equal(await upstreamCalls(q), 1);
});
