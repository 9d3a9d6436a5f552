// The official `openai` SDK against the gateway (env GATEWAY, MOCK set by tests/e2e/sdk.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const GATEWAY = process.env.GATEWAY;
const MOCK = process.env.MOCK;
const openai = new OpenAI({ baseURL: `${GATEWAY}/openai/v1`, apiKey: 'client-key', maxRetries: 0 });
const viaAnthropic = new OpenAI({ baseURL: `${GATEWAY}/anthropic/v1`, apiKey: 'client-key', maxRetries: 0 });
const MESSAGES = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello' }];
const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
  parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] } } }];

async function lastUpstream() {
  const all = await (await fetch(`${MOCK}/__requests`)).json();
  return all[all.length - 1];
}

test('chat, non-streaming: answer and usage as the provider sent them', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES });
  assert.equal(r.choices[0].message.content, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(up.body.model, 'gpt-4o-mini-2024-07-18');
  assert.equal(up.headers.authorization, 'Bearer sk-mock-openai');
  assert.deepEqual(r.usage, up.usage);
});

test('chat, streaming with include_usage', async () => {
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES, stream: true,
    stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, 'Hello from the mock.');
  assert.deepEqual(usage, (await lastUpstream()).usage);
});

test('chat, streaming without include_usage: no usage chunk', async () => {
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES, stream: true });
  let chunks = 0;
  for await (const chunk of stream) {
    assert.ok(chunk.choices.length > 0);
    chunks++;
  }
  assert.ok(chunks > 2);
  assert.equal((await lastUpstream()).body.stream_options.include_usage, true); // forced upstream
});

test('tool calls, non-streaming and streaming (runner helper)', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES, tools: TOOLS });
  const tc = r.choices[0].message.tool_calls[0];
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { location: 'Paris', unit: 'celsius' });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  const stream = openai.chat.completions.stream({ model: 'gpt-4o-mini', messages: MESSAGES, tools: TOOLS });
  const final = await stream.finalChatCompletion();
  const stc = final.choices[0].message.tool_calls[0];
  assert.equal(stc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(stc.function.arguments), { location: 'Paris', unit: 'celsius' });
});

test('embeddings (the SDK asks for base64 and decodes it)', async () => {
  const r = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(r.data.length, 2);
  assert.equal(r.data[0].embedding.length, 8);
  assert.deepEqual(r.usage, (await lastUpstream()).usage);
});

test('models: what the route serves', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['gpt-4o-mini', 'text-embedding-3-small']);
});

test('a model the route does not serve: NotFoundError', async () => {
  await assert.rejects(openai.chat.completions.create({ model: 'gpt-9', messages: MESSAGES }),
    (e) => e instanceof OpenAI.NotFoundError && /not served/.test(e.message));
});

test('OpenAI client -> Anthropic provider: non-streaming, usage translated', async () => {
  const r = await viaAnthropic.chat.completions.create({ model: 'claude-3-5-haiku', messages: MESSAGES, max_tokens: 64 });
  assert.equal(r.choices[0].message.content, 'Hello from the mock.');
  const u = (await lastUpstream()).usage;
  assert.equal(r.usage.completion_tokens, u.output_tokens);
  assert.equal(r.usage.prompt_tokens, u.input_tokens + u.cache_read_input_tokens);
});

test('OpenAI client -> Anthropic provider: streaming with usage and tool calls', async () => {
  const stream = await viaAnthropic.chat.completions.create({ model: 'claude-3-5-haiku', messages: MESSAGES,
    stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, 'Hello from the mock.');
  const u = (await lastUpstream()).usage;
  assert.equal(usage.completion_tokens, u.output_tokens);
  assert.equal(usage.prompt_tokens, u.input_tokens + u.cache_read_input_tokens);
  const ts = viaAnthropic.chat.completions.stream({ model: 'claude-3-5-haiku', messages: MESSAGES, tools: TOOLS });
  const final = await ts.finalChatCompletion();
  const tc = final.choices[0].message.tool_calls[0];
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { location: 'Paris', unit: 'celsius' });
});
