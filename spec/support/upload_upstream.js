// Upstream for the request-body streaming specs (spec/request_body_stream_spec.lua).
// usage: node upload_upstream.js PORT_FILE LOG_FILE
// Appends one JSON line per event to LOG_FILE: {ev: "head", path, conn} when a request's head arrives (before
// its body is read), {ev: "end", path, len} when its body ended, {ev: "aborted", path, len} when it was cut.
// Paths:
//   /sink           reads the body; answers {len, sha256, te, cl, conn, seen_len, seen_tail}
//   /slow?bps=N     the same, reading at most N bytes per second (the rest waits in the kernel and the gateway)
//   /early?status=N answers N at once, before reading the body (node then drops the rest of it)
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const [portFile, logFile] = process.argv.slice(2);
let connSeq = 0;
const log = (o) => fs.appendFileSync(logFile, JSON.stringify(o) + '\n');

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const conn = req.socket.sl_id;
  log({ ev: 'head', path: url.pathname, conn });
  if (url.pathname === '/early') {
    const body = JSON.stringify({ early: true });
    res.writeHead(Number(url.searchParams.get('status') || 401),
      { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  const hash = crypto.createHash('sha256');
  let len = 0;
  const bps = Number(url.searchParams.get('bps') || 0);
  let windowStart = Date.now(), windowBytes = 0;
  req.on('data', (d) => {
    hash.update(d);
    len += d.length;
    if (bps > 0) {
      windowBytes += d.length;
      const due = windowStart + (windowBytes / bps) * 1000;
      const wait = due - Date.now();
      if (wait > 0) {
        req.pause();
        setTimeout(() => req.resume(), wait);
      }
    }
  });
  req.on('aborted', () => log({ ev: 'aborted', path: url.pathname, conn, len }));
  req.on('end', () => {
    log({ ev: 'end', path: url.pathname, conn, len });
    const body = JSON.stringify({ len, sha256: hash.digest('hex'), te: req.headers['transfer-encoding'] || null,
      cl: req.headers['content-length'] || null, conn, seen_len: req.headers['x-seen-len'] || null,
      seen_tail: req.headers['x-seen-tail'] || null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.on('connection', (s) => { s.sl_id = ++connSeq; });
server.keepAliveTimeout = 60000;
server.requestTimeout = 0;
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
