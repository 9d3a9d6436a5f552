// The official SDKs against streams that break (env GATEWAY, MOCK set by tests/e2e/sdk_faults.sh): for every fault
// of tests/mock/faulty_provider.js at every place of a stream, from an OpenAI and an Anthropic provider, each SDK
// either gets the whole answer or raises an APIError with a message. A cut answer that the SDK presents as whole
// (what both SDKs do with a stream that just stops: neither checks for [DONE] / message_stop) fails the test, and
// so does any other exception (a JSON SyntaxError from a half event, a fetch "terminated").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const GATEWAY = process.env.GATEWAY;
const MOCK = process.env.MOCK;
const FULL_TEXT = 'w0 w1 w2 w3 w4 ';
const PROVIDERS = ['oa', 'an']; // routes to an OpenAI and an Anthropic provider
const FAULTS = ['reset', 'close', 'stall', 'garbage'];
const PLACES = ['head', 'first', 'mid_first', 'mid_stream', 'mid_event', 'before_end'];

const openai = (p) => new OpenAI({ baseURL: `${GATEWAY}/${p}/v1`, apiKey: 'k', maxRetries: 0 });
const anthropic = (p) => new Anthropic({ baseURL: `${GATEWAY}/${p}`, apiKey: 'k', maxRetries: 0 });
const MESSAGES = [{ role: 'user', content: 'hi' }];

// One streamed answer through the raw SDK stream: {ok: true, text, end} or {ok: false, error}.
async function viaOpenAI(p, model) {
  let text = '';
  let end = null;
  try {
    const stream = await openai(p).chat.completions.create({ model, messages: MESSAGES, stream: true });
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta?.content) text += c.delta.content;
      if (c?.finish_reason) end = c.finish_reason;
    }
    return { ok: true, text, end };
  } catch (error) {
    return { ok: false, error, text };
  }
}

async function viaAnthropic(p, model) {
  let text = '';
  let end = null;
  try {
    const stream = await anthropic(p).messages.create({ model, max_tokens: 50, messages: MESSAGES, stream: true });
    for await (const ev of stream) {
      if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
      if (ev.type === 'message_stop') end = 'message_stop';
    }
    return { ok: true, text, end };
  } catch (error) {
    return { ok: false, error, text };
  }
}

// The rule: a whole answer (all the text, and the end the SDK's user looks for), or a clear APIError.
function judge(r, sdk, what) {
  if (r.ok) {
    assert.equal(r.text, FULL_TEXT, `${what}: the SDK finished without an error, so the answer must be whole`);
    assert.ok(r.end, `${what}: a whole answer has its finish reason / message_stop`);
    return 'complete';
  }
  const APIError = sdk === 'openai' ? OpenAI.APIError : Anthropic.APIError;
  assert.ok(r.error instanceof APIError,
    `${what}: the SDK must raise an APIError, got ${r.error?.constructor?.name}: ${r.error?.message}`);
  assert.ok(r.error.message && r.error.message.length > 0, `${what}: the error says something`);
  return 'error';
}

for (const fault of FAULTS) {
  test(`${fault} at every place of a stream: a whole answer or an APIError`, async () => {
    const seen = {};
    for (const place of PLACES) {
      for (const p of PROVIDERS) {
        const model = `f/${fault}/${place}`;
        const o = judge(await viaOpenAI(p, model), 'openai', `openai SDK, ${p}, ${model}`);
        const a = judge(await viaAnthropic(p, model), 'anthropic', `anthropic SDK, ${p}, ${model}`);
        seen[`${place} ${p}`] = `${o}/${a}`;
        // in the middle of the stream nothing can pass for whole
        if (place === 'mid_stream' || place === 'mid_event') {
          assert.equal(o, 'error', `openai SDK, ${p}, ${model}`);
          assert.equal(a, 'error', `anthropic SDK, ${p}, ${model}`);
        }
      }
    }
    // the raw record of what each SDK made of each case, for whoever reads the test log
    console.log(fault, JSON.stringify(seen));
  });
}

test('the mid-stream error reaches the SDK as an APIError carrying the gateway message', async () => {
  const r = await viaOpenAI('oa', 'f/reset/mid_event');
  assert.match(r.error.message, /upstream connection reset during the stream/);
  const a = await viaAnthropic('an', 'f/reset/mid_event');
  assert.match(a.error.message, /upstream connection reset during the stream/);
  assert.ok(r.text.length > 0 && a.text.length > 0, 'some text came before the error');
});

test('a half event then a clean close, megabytes without a line end, an event over the bound', async () => {
  for (const p of PROVIDERS) {
    for (const model of ['f/partial/x', 'f/nolf/10']) {
      judge(await viaOpenAI(p, model), 'openai', `openai SDK, ${p}, ${model}`);
      assert.equal(judge(await viaAnthropic(p, model), 'anthropic', `anthropic SDK, ${p}, ${model}`), 'error');
      assert.equal((await viaOpenAI(p, model)).ok, false, `openai SDK, ${p}, ${model}`);
    }
  }
});

test('the helpers (finalChatCompletion, finalMessage) raise too, and get whole answers when nothing breaks', async () => {
  for (const p of PROVIDERS) {
    await assert.rejects(openai(p).chat.completions.stream({ model: 'f/close/mid_event', messages: MESSAGES })
      .finalChatCompletion(), OpenAI.APIError);
    await assert.rejects(anthropic(p).messages.stream({ model: 'f/stall/mid_stream', max_tokens: 50, messages: MESSAGES })
      .finalMessage(), Anthropic.APIError);
    const c = await openai(p).chat.completions.stream({ model: 'f/none/end', messages: MESSAGES }).finalChatCompletion();
    assert.equal(c.choices[0].message.content, FULL_TEXT);
    const m = await anthropic(p).messages.stream({ model: 'f/none/end', max_tokens: 50, messages: MESSAGES }).finalMessage();
    assert.equal(m.content[0].text, FULL_TEXT);
    assert.equal(m.stop_reason, 'end_turn');
  }
});

test('a long stream cut by an upstream reset after 98 of 100 events is an error, not a short answer', async () => {
  for (const p of PROVIDERS) {
    const o = await viaOpenAI(p, 'f/reset/at98/n100');
    assert.ok(o.error instanceof OpenAI.APIError, String(o.error));
    assert.ok(o.text.startsWith('w0 w1 w2') && o.text.length > 300);
    const a = await viaAnthropic(p, 'f/reset/at98/n100');
    assert.ok(a.error instanceof Anthropic.APIError, String(a.error));
  }
  // and the mock saw every call (the MOCK hook answers)
  assert.ok((await (await fetch(`${MOCK}/__requests`)).json()).length > 0);
});
