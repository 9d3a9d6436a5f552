// Mock embeddings provider for the semantic cache specs (OpenAI wire: POST .../embeddings).
// usage: node spec/support/embeddings.js PORT
// The embedding of a text is deterministic and meaningful enough for paraphrase tests: the text is lower-cased,
// cut into words (letters and digits), each word's character trigrams (with the word padded by spaces) are hashed
// (FNV-1a) into DIM buckets and counted; the vector is normalised. Texts sharing most words and spellings are near
// (cosine close to 1), unrelated ones far. An input containing "[slow]" is answered after 3 s (for timeouts);
// "[fail]" gets a 500. GET /__count -> {embeddings: N} requests so far.
'use strict';
const http = require('http');

const DIM = 256;
let count = 0;

function fnv(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}

function embed(text) {
  const v = new Array(DIM).fill(0);
  const words = String(text).toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  for (const w of words) {
    const p = ` ${w} `;
    for (let i = 0; i + 3 <= p.length; i++) v[fnv(p.slice(i, i + 3)) % DIM] += 1;
  }
  const n = Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1;
  return v.map((x) => x / n);
}

if (require.main === module) {
  const port = Number(process.argv[2] || 0);
  http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/__count') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ embeddings: count }));
      }
      if (req.method !== 'POST' || !req.url.endsWith('/embeddings')) { res.writeHead(404); return res.end(); }
      count++;
      let body = {};
      try { body = JSON.parse(Buffer.concat(parts).toString('utf8')); } catch (e) { /* empty */ }
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const answer = () => {
        if (inputs.some((s) => String(s).includes('[fail]'))) {
          res.writeHead(500, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ error: { message: 'mock embeddings failure', type: 'server_error' } }));
        }
        const out = JSON.stringify({ object: 'list', model: body.model || 'mock-embed',
          data: inputs.map((s, i) => ({ object: 'embedding', index: i, embedding: embed(s) })),
          usage: { prompt_tokens: 4, total_tokens: 4 } });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
        res.end(out);
      };
      if (inputs.some((s) => String(s).includes('[slow]'))) setTimeout(answer, 3000); else answer();
    });
  }).listen(port, '127.0.0.1', function () { console.log('listening ' + this.address().port); });
}

module.exports = { embed };
