// A Node client instrumented with the OpenTelemetry JS SDK (sdk-trace-node, exporter-trace-otlp-http) calls the
// gateway through the openai SDK inside a span, with the W3C trace context injected into the request. One small
// OTLP/HTTP receiver (here) collects the client's spans and the gateway's (configured to send to it). Checks: the
// gateway's span is a child of the client's, the attempts of ai-proxy-multi (one failing target, then a good one)
// are siblings under it, and the GenAI attributes are there and typed as the semantic conventions say.
// env: GATEWAY, OTLP_PORT
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { trace, context, propagation } from '@opentelemetry/api';

const { GATEWAY, OTLP_PORT } = process.env;

function receiver(port) {
  const spans = [];
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(parts).toString('utf8'));
        for (const rs of body.resourceSpans || []) {
          const service = (rs.resource.attributes || []).find((a) => a.key === 'service.name');
          for (const ss of rs.scopeSpans || []) for (const sp of ss.spans || []) spans.push({ service: service && service.value.stringValue, ...sp });
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } catch (e) {
        res.writeHead(400); res.end(String(e));
      }
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, spans })));
}

const attr = (sp, k) => (sp.attributes || []).find((a) => a.key === k)?.value;
// OTLP JSON carries ids as hex (the gateway) or base64 (some SDK versions): compare as hex
const hex = (id) => (!id ? '' : /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex'));

test('the gateway continues the client trace; attempts are siblings with GenAI attributes', { timeout: 60000 }, async () => {
  const { server, spans } = await receiver(Number(OTLP_PORT));
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'e2e-client' }),
    spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `http://127.0.0.1:${OTLP_PORT}/v1/traces` }))],
  });
  provider.register();
  const tracer = trace.getTracer('e2e');
  const client = new OpenAI({ apiKey: 'unused', baseURL: GATEWAY + '/multi/v1', maxRetries: 0 });
  let clientSpanId, traceId, answer;
  await tracer.startActiveSpan('ask the gateway', async (span) => {
    clientSpanId = span.spanContext().spanId;
    traceId = span.spanContext().traceId;
    const headers = {};
    propagation.inject(context.active(), headers);
    assert.match(headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    answer = await client.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 16, temperature: 0.5,
      messages: [{ role: 'user', content: 'Say hello' }] }, { headers });
    span.end();
  });
  assert.equal(answer.choices[0].message.content.length > 0, true);
  await provider.forceFlush();

  let gw;
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    gw = spans.filter((s) => s.service === 'sluice-e2e' && hex(s.traceId) === traceId);
    if (gw.length >= 3 && spans.some((s) => s.service === 'e2e-client')) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  server.close();
  await provider.shutdown();
  const mine = spans.find((s) => s.service === 'e2e-client' && hex(s.spanId) === clientSpanId);
  assert.ok(mine, 'the client span reached the receiver');
  const serverSpan = gw.find((s) => s.kind === 2);
  assert.ok(serverSpan, 'the gateway sent its server span');
  assert.equal(hex(serverSpan.parentSpanId), clientSpanId, 'gateway span is a child of the client span');
  const attempts = gw.filter((s) => s.kind === 3).sort((a, b) => Number(BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano)));
  assert.equal(attempts.length, 2, 'one failed attempt, one answered');
  for (const a of attempts) {
    assert.equal(hex(a.parentSpanId), hex(serverSpan.spanId), 'attempts are siblings under the gateway span');
    assert.equal(attr(a, 'gen_ai.operation.name').stringValue, 'chat');
    assert.equal(attr(a, 'gen_ai.system').stringValue, 'openai');
    assert.equal(typeof attr(a, 'gen_ai.request.model').stringValue, 'string');
    assert.equal(Number(attr(a, 'gen_ai.request.max_tokens').intValue), 16);
    assert.equal(attr(a, 'gen_ai.request.temperature').doubleValue, 0.5);
  }
  assert.equal(attempts[0].status.code, 2);
  assert.equal(attr(attempts[0], 'error.type').stringValue, '500');
  const ok = attempts[1];
  assert.equal(ok.status.code, 1);
  // gen_ai.usage.* are ints, finish_reasons a string array, response.model a string
  assert.ok('intValue' in attr(ok, 'gen_ai.usage.input_tokens'));
  assert.equal(Number(attr(ok, 'gen_ai.usage.input_tokens').intValue), answer.usage.prompt_tokens);
  assert.equal(Number(attr(ok, 'gen_ai.usage.output_tokens').intValue), answer.usage.completion_tokens);
  assert.deepEqual(attr(ok, 'gen_ai.response.finish_reasons').arrayValue.values.map((v) => v.stringValue), ['stop']);
  assert.equal(typeof attr(ok, 'gen_ai.response.model').stringValue, 'string');
  assert.equal(attr(ok, 'gen_ai.response.id').stringValue, answer.id);
  assert.equal(Number(attr(serverSpan, 'http.response.status_code').intValue), 200);
});
