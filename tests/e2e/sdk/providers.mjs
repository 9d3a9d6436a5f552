// The official SDKs against the gateway in front of Gemini, Bedrock and Azure OpenAI, played by the strict mock
// (env GATEWAY, MOCK set by tests/e2e/sdk.sh): rows G1 (Gemini 3 thought signatures over a tool loop), B1/B3
// (Bedrock temperature and a conversation opened by the assistant, SigV4 verified by the mock), A1/A2 (Azure's
// content-filter chunks, an Anthropic tool_result with is_error) of the integrator's report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const GATEWAY = process.env.GATEWAY;
const MOCK = process.env.MOCK;
const gemini = new OpenAI({ baseURL: `${GATEWAY}/gemini/v1`, apiKey: 'client-key', maxRetries: 0 });
const geminiClaude = new Anthropic({ baseURL: `${GATEWAY}/gemini`, apiKey: 'client-key', maxRetries: 0 });
const bedrock = new OpenAI({ baseURL: `${GATEWAY}/bedrock/v1`, apiKey: 'client-key', maxRetries: 0 });
const azure = new OpenAI({ baseURL: `${GATEWAY}/azure/v1`, apiKey: 'client-key', maxRetries: 0 });
const azureClaude = new Anthropic({ baseURL: `${GATEWAY}/azure`, apiKey: 'client-key', maxRetries: 0 });
const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
  parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
    required: ['location'] } } }];
const ASK = { role: 'user', content: 'What is the weather in Paris?' };

async function lastUpstream() {
  const all = await (await fetch(`${MOCK}/__requests`)).json();
  return all[all.length - 1];
}

test('G1 gemini 3, openai SDK: a two-turn tool loop replays the call as the SDK kept it', async () => {
  const messages = [ASK];
  const r1 = await gemini.chat.completions.create({ model: 'gemini-3-pro', messages, tools: TOOLS });
  const msg = r1.choices[0].message;
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  messages.push(msg);
  for (const tc of msg.tool_calls) messages.push({ role: 'tool', tool_call_id: tc.id, content: '{"temp": 21}' });
  const r2 = await gemini.chat.completions.create({ model: 'gemini-3-pro', messages, tools: TOOLS });
  assert.equal(r2.choices[0].message.content, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(up.invalid, undefined);
  assert.ok(up.body.contents[1].parts[0].thoughtSignature);
});

test('G1 gemini 3, openai SDK stream helper: the accumulated message replays too', async () => {
  const messages = [ASK];
  const final = await gemini.chat.completions.stream({ model: 'gemini-3-pro', messages, tools: TOOLS }).finalChatCompletion();
  const msg = final.choices[0].message;
  messages.push(msg);
  for (const tc of msg.tool_calls) messages.push({ role: 'tool', tool_call_id: tc.id, content: 'sunny' });
  const r2 = await gemini.chat.completions.create({ model: 'gemini-3-pro', messages, tools: TOOLS });
  assert.equal(r2.choices[0].message.content, 'Hello from the mock.');
});

test('G1 gemini 3, anthropic SDK: tool_use -> tool_result loop', async () => {
  const tools = [{ name: 'get_weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const m1 = await geminiClaude.messages.create({ model: 'gemini-3-pro', max_tokens: 100, messages, tools });
  const use = m1.content.find((b) => b.type === 'tool_use');
  assert.equal(use.name, 'get_weather');
  messages.push({ role: 'assistant', content: m1.content });
  messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '21 degrees' }] });
  const m2 = await geminiClaude.messages.create({ model: 'gemini-3-pro', max_tokens: 100, messages, tools });
  assert.equal(m2.content[0].text, 'Hello from the mock.');
});

test('B1/B3 bedrock, openai SDK: temperature 1.5 and a conversation the assistant opened (SigV4 checked)', async () => {
  const r = await bedrock.chat.completions.create({ model: 'claude-bedrock', temperature: 1.5, messages: [
    { role: 'assistant', content: 'Hi, I am the weather bot.' }, ASK] });
  assert.equal(r.choices[0].message.content, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.equal(up.invalid, undefined);
  assert.equal(up.body.inferenceConfig.temperature, 1);
  assert.match(up.headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIDMOCKPROVIDER\/\d{8}\/eu-west-1\/bedrock\//);
});

test('bedrock, openai SDK: streamed text and tool calls from event-stream frames', async () => {
  let text = '';
  const stream = await bedrock.chat.completions.create({ model: 'claude-bedrock', messages: [ASK], stream: true });
  for await (const chunk of stream) text += chunk.choices[0].delta.content || '';
  assert.equal(text, 'Hello from the mock.');
  const final = await bedrock.chat.completions.stream({ model: 'claude-bedrock', messages: [ASK], tools: TOOLS })
    .finalChatCompletion();
  assert.deepEqual(JSON.parse(final.choices[0].message.tool_calls[0].function.arguments), { location: 'Paris', unit: 'celsius' });
});

test('A1 azure, openai SDK: every streamed chunk has choices[0] (client code reads it unguarded)', async () => {
  let text = '';
  const stream = await azure.chat.completions.create({ model: 'gpt-4o', messages: [ASK], stream: true });
  for await (const chunk of stream) text += chunk.choices[0].delta.content || '';
  assert.equal(text, 'Hello from the mock.');
  let usage = null;
  const withUsage = await azure.chat.completions.create({ model: 'gpt-4o', messages: [ASK], stream: true,
    stream_options: { include_usage: true } });
  for await (const chunk of withUsage) {
    if (chunk.usage) usage = chunk.usage; // the usage chunk the client asked for is the one with choices: []
    else assert.ok(chunk.choices[0]);
  }
  assert.equal(usage.total_tokens, 22);
});

test('A2 azure, anthropic SDK: a tool_result with is_error', async () => {
  const m = await azureClaude.messages.create({ model: 'gpt-4o', max_tokens: 100, messages: [
    { role: 'user', content: 'Run it' },
    { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'run', input: {} }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', is_error: true, content: 'command not found' }] }] });
  assert.equal(m.content[0].text, 'Hello from the mock.');
  const up = await lastUpstream();
  assert.deepEqual(up.body.messages[2], { role: 'tool', tool_call_id: 'toolu_1', content: 'Error: command not found' });
});
