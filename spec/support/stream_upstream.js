// Upstream for client-fault specs (spec/conn_*_spec.lua): slow heads, slow bodies, endless streams, and a count
// of what happened to each exchange, so a spec can tell whether the gateway cancelled it.
// usage: node stream_upstream.js PORT_FILE
//   GET /head?ms=M            nothing for M ms, then a small 200 (a client may leave before the head)
//   GET /stream?n=N&ms=M&size=S   chunked 200, head at once, then N chunks of S bytes ("data: i" padded), one
//                             every M ms (first one after M ms: a client may leave after the head)
//   GET /body?n=N&ms=M&size=S     the same with a Content-Length (a client may leave mid-body)
//   GET /big?len=L            a Content-Length body of L bytes, written as fast as the gateway takes it
//   GET /quick                "ok"
//   GET /_stats               {started, finished, aborted, open, conns}: exchanges begun, answered to the end, cut
//                             by the gateway (its connection closed before the end), still running; open sockets
//   GET /_reset               zeroes the counters
'use strict';
const http = require('http');
const fs = require('fs');

const portFile = process.argv[2];
const stats = { started: 0, finished: 0, aborted: 0, open: 0, conns: 0 };

function num(q, k, d) {
  const v = Number(q.get(k));
  return Number.isFinite(v) && v >= 0 ? v : d;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const q = url.searchParams;
  if (url.pathname === '/_stats') {
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify(stats));
  }
  if (url.pathname === '/_reset') {
    stats.started = stats.finished = stats.aborted = 0;
    return res.end('ok');
  }
  stats.started++;
  stats.open++;
  let done = false;
  const timers = [];
  const settle = (how) => {
    if (done) return;
    done = true;
    stats.open--;
    stats[how]++;
    timers.forEach(clearTimeout);
  };
  res.on('finish', () => settle('finished'));
  res.on('close', () => settle('aborted')); // after 'finish' this is a no-op
  req.resume();
  const later = (ms, fn) => timers.push(setTimeout(() => { if (!done && !res.destroyed) fn(); }, ms));
  const piece = (i, size) => {
    const s = 'data: ' + i + '\n\n';
    return s.length >= size ? s : s + ' '.repeat(size - s.length);
  };
  switch (url.pathname) {
    case '/head':
      return later(num(q, 'ms', 1000), () => res.end('late'));
    case '/stream':
    case '/body': {
      const n = num(q, 'n', 10), ms = num(q, 'ms', 100), size = Math.max(num(q, 'size', 16), 12);
      const headers = { 'content-type': 'text/event-stream' };
      if (url.pathname === '/body') headers['content-length'] = n * size;
      res.writeHead(200, headers);
      res.flushHeaders();
      let i = 0;
      const next = () => {
        res.write(piece(i++, size));
        if (i >= n) return res.end();
        later(ms, next);
      };
      return later(ms, next);
    }
    case '/big': {
      const len = num(q, 'len', 1 << 20);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': len });
      const block = Buffer.alloc(64 * 1024, 120);
      let left = len;
      const pump = () => {
        while (left > 0 && !res.destroyed) {
          const n = Math.min(left, block.length);
          left -= n;
          if (!res.write(n === block.length ? block : block.subarray(0, n))) return res.once('drain', pump);
        }
        if (left === 0) res.end();
      };
      return pump();
    }
    default:
      return res.end('ok');
  }
});
server.on('connection', (s) => {
  stats.conns++;
  s.on('close', () => stats.conns--);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
