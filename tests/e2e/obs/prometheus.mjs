// A real Prometheus server scrapes the gateway's /metrics (1 s interval, Bearer admin key) while load runs on the
// route "load"; the test then asks Prometheus' HTTP API (/api/v1/query) for the request and token counts it sent.
// env: GATEWAY, PROM
import { test } from 'node:test';
import assert from 'node:assert/strict';

const { GATEWAY, PROM } = process.env;
const N = 120;          // requests of the load
const CONCURRENCY = 8;

async function query(q) {
  const res = await fetch(PROM + '/api/v1/query?query=' + encodeURIComponent(q));
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, 'success');
  return body.data.result;
}

async function scalar(q) {
  const r = await query(q);
  return r.length ? Number(r[0].value[1]) : null;
}

async function waitFor(q, want, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await scalar(q);
    if (last !== null && Math.abs(last - want) < 1e-9) return last;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(last, want, 'Prometheus never saw ' + q + ' = ' + want);
}

test('Prometheus scrapes the request and token counts sent during a load', { timeout: 90000 }, async () => {
  // the target is up and scraped before the load starts
  await waitFor('up{job="sluice"}', 1);
  let sent = 0, next = 0;
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'load' }] });
  async function worker() {
    while (next < N) {
      next++;
      const res = await fetch(GATEWAY + '/load/v1/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer load-key' }, body });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      sent++;
      if (sent % 20 === 0) await new Promise((r) => setTimeout(r, 100)); // spread over a few scrapes
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  assert.equal(sent, N);
  await waitFor('sum(sluice_ai_requests_total{route="load",consumer="loader",status_class="2xx"})', N);
  await waitFor('sum(sluice_http_requests_total{route="load",status_class="2xx"})', N);
  // the mock provider's usage: 17 input (3 cached) and 5 output tokens per answer
  await waitFor('sum(sluice_gen_ai_client_token_usage_total{route="load",token_type="input"})', 17 * N);
  await waitFor('sum(sluice_gen_ai_client_token_usage_total{route="load",token_type="output"})', 5 * N);
  await waitFor('sum(sluice_gen_ai_client_token_usage_total{route="load",token_type="cached"})', 3 * N);
  const cost = await scalar('sum(sluice_ai_cost_usd_total{route="load"})');
  assert.ok(Math.abs(cost - N * (17 * 0.15 + 5 * 0.6) / 1e6) < 1e-12, 'cost ' + cost);
  // the histogram is usable by histogram_quantile, and the counter grew while the load ran (several scrapes)
  const p99 = await scalar('histogram_quantile(0.99, sum by (le) (sluice_gen_ai_client_operation_duration_seconds_bucket{route="load"}))');
  assert.ok(p99 > 0 && p99 <= 60, 'p99 ' + p99);
  const points = await query('sluice_ai_requests_total{route="load"}[2m]');
  const values = points.flatMap((s) => s.values.map((v) => Number(v[1])));
  assert.ok(values.length >= 2, 'scraped more than once');
});
