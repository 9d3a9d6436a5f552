// The official SDKs against a rate-limited route (env GATEWAY; run by spec/limits_sdk_spec.lua): the 429 is the
// SDK's RateLimitError, and the SDK's own retry waits the Retry-After the gateway sent, then gets through.
// The route allows 1 request per 5 s window per consumer; each test has its own consumer (key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const GATEWAY = process.env.GATEWAY;

// A fetch that records when each attempt went out and what came back (status, retry-after).
function recorder() {
  const attempts = [];
  const f = async (url, init) => {
    const at = Date.now();
    const res = await fetch(url, init);
    attempts.push({ at, status: res.status, retryAfter: res.headers.get('retry-after'), done: Date.now() });
    return res;
  };
  return { attempts, fetch: f };
}

function checkWaited(attempts) {
  // every retry after a 429 went out no earlier than the Retry-After it was given
  for (let i = 1; i < attempts.length; i++) {
    if (attempts[i - 1].status === 429) {
      const waited = attempts[i].at - attempts[i - 1].done;
      const asked = Number(attempts[i - 1].retryAfter) * 1000;
      assert.ok(waited >= asked - 50, `retried after ${waited} ms, Retry-After was ${asked} ms`);
    }
  }
}

test('openai: a 429 is a RateLimitError with Retry-After', async () => {
  const client = new OpenAI({ baseURL: `${GATEWAY}/v1`, apiKey: 'key-oa1', maxRetries: 0 });
  const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 };
  await client.chat.completions.create(body);
  await assert.rejects(client.chat.completions.create(body), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, `got ${err && err.constructor && err.constructor.name}`);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    const ra = Number(err.headers.get('retry-after'));
    assert.ok(ra >= 1 && ra <= 5, `retry-after ${ra}`);
    assert.equal(err.headers.get('x-ratelimit-limit-requests'), '1');
    assert.equal(err.headers.get('x-ratelimit-remaining-requests'), '0');
    return true;
  });
});

test('openai: the SDK retry honours Retry-After and then succeeds', async () => {
  const rec = recorder();
  const client = new OpenAI({ baseURL: `${GATEWAY}/v1`, apiKey: 'key-oa2', maxRetries: 3, fetch: rec.fetch });
  const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 };
  await client.chat.completions.create(body);
  const r = await client.chat.completions.create(body);
  assert.equal(r.object, 'chat.completion');
  const statuses = rec.attempts.map((a) => a.status);
  assert.deepEqual([statuses[0], statuses[1], statuses[statuses.length - 1]], [200, 429, 200]);
  checkWaited(rec.attempts);
});

test('anthropic: a 429 is a RateLimitError with Retry-After', async () => {
  const client = new Anthropic({ baseURL: GATEWAY, apiKey: 'key-an1', maxRetries: 0 });
  const body = { model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] };
  await client.messages.create(body);
  await assert.rejects(client.messages.create(body), (err) => {
    assert.ok(err instanceof Anthropic.RateLimitError, `got ${err && err.constructor && err.constructor.name}`);
    assert.equal(err.status, 429);
    assert.equal(err.error.error.type, 'rate_limit_error');
    const ra = Number(err.headers.get('retry-after'));
    assert.ok(ra >= 1 && ra <= 5, `retry-after ${ra}`);
    return true;
  });
});

test('anthropic: the SDK retry honours Retry-After and then succeeds', async () => {
  const rec = recorder();
  const client = new Anthropic({ baseURL: GATEWAY, apiKey: 'key-an2', maxRetries: 3, fetch: rec.fetch });
  const body = { model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] };
  await client.messages.create(body);
  const r = await client.messages.create(body);
  assert.equal(r.type, 'message');
  const statuses = rec.attempts.map((a) => a.status);
  assert.deepEqual([statuses[0], statuses[1], statuses[statuses.length - 1]], [200, 429, 200]);
  checkWaited(rec.attempts);
});

test('openai: over budget is a RateLimitError that the SDK does not retry', async () => {
  const rec = recorder();
  const client = new OpenAI({ baseURL: `${GATEWAY}/budget/v1`, apiKey: 'key-poor', maxRetries: 3, fetch: rec.fetch });
  await assert.rejects(client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError);
      assert.equal(err.code, 'insufficient_quota');
      assert.match(err.message, /Budget exceeded/);
      return true;
    });
  assert.equal(rec.attempts.length, 1); // x-should-retry: false
});
