// Concurrent load for the limit specs: N requests, C at a time, spread round-robin over several gateways.
//   node burst.js SPEC_JSON
//   SPEC_JSON = {"urls": [...], "n": 600, "concurrency": 30, "method": "POST", "body": {...},
//                "headers": {...}, "timeout_ms": 20000, "collect": "header-name",
//                "seq_header": "x-seq", "seq_every": 20}   (request i carries x-seq: floor(i / 20))
// Prints {"total", "by_status": {"200": n, ...}, "by_url": [{"200": n, "429": m}, ...], "errors": n,
//         "samples": {"429": first body, ...}, "collected": {"200": [values of spec.collect header], ...}}.
'use strict';
const http = require('http');

const spec = JSON.parse(process.argv[2]);
const urls = spec.urls.map((u) => new URL(u));
const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency });
const body = spec.body === undefined ? null : Buffer.from(JSON.stringify(spec.body));
const out = { total: 0, by_status: {}, by_url: urls.map(() => ({})), errors: 0, samples: {}, collected: {} };

function one(i) {
  const u = urls[i % urls.length];
  return new Promise((resolve) => {
    const headers = Object.assign({}, spec.headers || {});
    if (spec.seq_header) headers[spec.seq_header] = String(Math.floor(i / (spec.seq_every || 1)));
    if (body) { headers['content-type'] = 'application/json'; headers['content-length'] = body.length; }
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: spec.method || 'POST',
                               headers, agent, timeout: spec.timeout_ms || 20000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const s = String(res.statusCode);
        out.by_status[s] = (out.by_status[s] || 0) + 1;
        out.by_url[i % urls.length][s] = (out.by_url[i % urls.length][s] || 0) + 1;
        if (!out.samples[s]) out.samples[s] = { body: Buffer.concat(chunks).toString().slice(0, 2000), headers: res.headers };
        if (spec.collect) (out.collected[s] = out.collected[s] || []).push(res.headers[spec.collect] || null);
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => { out.errors++; out.samples.error = String(e); resolve(); });
    if (body) req.write(body);
    req.end();
  });
}

(async () => {
  let next = 0;
  const workers = [];
  for (let w = 0; w < spec.concurrency; w++) {
    workers.push((async () => {
      while (next < spec.n) { const i = next++; await one(i); out.total++; }
    })());
  }
  await Promise.all(workers);
  agent.destroy();
  process.stdout.write(JSON.stringify(out));
})();
