// The official `@anthropic-ai/sdk` against the gateway (env GATEWAY, MOCK set by tests/e2e/sdk.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

const GATEWAY = process.env.GATEWAY;
const MOCK = process.env.MOCK;
const claude = new Anthropic({ baseURL: `${GATEWAY}/anthropic`, apiKey: 'client-key', maxRetries: 0 });
const viaOpenAI = new Anthropic({ baseURL: `${GATEWAY}/openai`, apiKey: 'client-key', maxRetries: 0 });
const REQ = { max_tokens: 128, system: 'Be brief.', messages: [{ role: 'user', content: 'Say hello' }] };
const TOOLS = [{ name: 'get_weather', description: 'Weather in a city',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] } }];

async function lastUpstream() {
  const all = await (await fetch(`${MOCK}/__requests`)).json();
  return all[all.length - 1];
}

test('messages, non-streaming: answer and usage as the provider sent them', async () => {
  const m = await claude.messages.create({ model: 'claude-3-5-haiku', ...REQ });
  assert.equal(m.content[0].text, 'Hello from the mock.');
  assert.equal(m.stop_reason, 'end_turn');
  const up = await lastUpstream();
  assert.equal(up.body.model, 'claude-3-5-haiku-20241022');
  assert.equal(up.headers['x-api-key'], 'sk-mock-anthropic');
  assert.equal(m.usage.input_tokens, up.usage.input_tokens);
  assert.equal(m.usage.output_tokens, up.usage.output_tokens);
  assert.equal(m.usage.cache_read_input_tokens, up.usage.cache_read_input_tokens);
});

test('messages, streaming: events and final usage', async () => {
  const stream = claude.messages.stream({ model: 'claude-3-5-haiku', ...REQ });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(final.usage.output_tokens, up.usage.output_tokens);
  assert.equal(final.usage.input_tokens, up.usage.input_tokens);
});

test('tool use, non-streaming and streaming', async () => {
  const m = await claude.messages.create({ model: 'claude-3-5-haiku', ...REQ, tools: TOOLS });
  const tu = m.content.find((b) => b.type === 'tool_use');
  assert.equal(tu.name, 'get_weather');
  assert.deepEqual(tu.input, { location: 'Paris', unit: 'celsius' });
  assert.equal(m.stop_reason, 'tool_use');
  const final = await claude.messages.stream({ model: 'claude-3-5-haiku', ...REQ, tools: TOOLS }).finalMessage();
  const stu = final.content.find((b) => b.type === 'tool_use');
  assert.deepEqual(stu.input, { location: 'Paris', unit: 'celsius' });
});

test('models: what the route serves', async () => {
  const ids = [];
  for await (const m of claude.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['claude-3-5-haiku']);
});

test('a model the route does not serve: NotFoundError', async () => {
  await assert.rejects(claude.messages.create({ model: 'claude-9', ...REQ }),
    (e) => e instanceof Anthropic.NotFoundError);
});

test('Anthropic client -> OpenAI provider: non-streaming', async () => {
  const m = await viaOpenAI.messages.create({ model: 'gpt-4o-mini', ...REQ });
  assert.equal(m.content[0].text, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(up.path, '/v1/chat/completions');
  assert.equal(m.usage.output_tokens, up.usage.completion_tokens);
  assert.equal(m.usage.input_tokens + (m.usage.cache_read_input_tokens || 0), up.usage.prompt_tokens);
});

test('Anthropic client -> OpenAI provider: streaming with usage and tool use', async () => {
  const stream = viaOpenAI.messages.stream({ model: 'gpt-4o-mini', ...REQ });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(final.usage.output_tokens, up.usage.completion_tokens);
  assert.equal(final.usage.input_tokens + (final.usage.cache_read_input_tokens || 0), up.usage.prompt_tokens);
  const tf = await viaOpenAI.messages.stream({ model: 'gpt-4o-mini', ...REQ, tools: TOOLS }).finalMessage();
  const tu = tf.content.find((b) => b.type === 'tool_use');
  assert.equal(tu.name, 'get_weather');
  assert.deepEqual(tu.input, { location: 'Paris', unit: 'celsius' });
});

test('an upstream 429 reaches both SDKs as RateLimitError, with retry-after', async () => {
  const limited = new Anthropic({ baseURL: `${GATEWAY}/limited`, apiKey: 'k', maxRetries: 0 });
  await assert.rejects(limited.messages.create({ model: 'claude-3-5-haiku', ...REQ }),
    (e) => e instanceof Anthropic.RateLimitError && e.status === 429 && e.headers.get('retry-after') === '7');
  const { default: OpenAI } = await import('openai');
  const oa = new OpenAI({ baseURL: `${GATEWAY}/limited/v1`, apiKey: 'k', maxRetries: 0 });
  await assert.rejects(oa.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
});
