// Mock upstream for specs (started by spec/helpers.lua: mock_upstream()).
// usage: node mock_upstream.js CONF_FILE LOG_FILE PORT_FILE
// Listens on 127.0.0.1:<free port> (written to PORT_FILE), appends every request as one JSON line to LOG_FILE
// before answering, and answers as CONF_FILE (re-read per request) says:
//   {status, headers, body, chunks: [..], delay, chunk_delay, paths: {"/x": {...same fields}},
//    fail_first: N (the first N requests get fail_status, default 503)}
// Without a body or chunks it echoes the request as JSON. Keep-alive is node's default.
'use strict';
const http = require('http');
const fs = require('fs');

const [confFile, logFile, portFile] = process.argv.slice(2);
let connSeq = 0;
let seen = 0;

function conf(path) {
  let c = {};
  try { c = JSON.parse(fs.readFileSync(confFile, 'utf8')); } catch (e) { /* keep defaults */ }
  const p = c.paths && (c.paths[path] || c.paths[path.split('?')[0]]);
  return p ? Object.assign({}, c, p) : c;
}

const server = http.createServer((req, res) => {
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', () => {
    const rec = { method: req.method, path: req.url, headers: req.headers,
                  body: Buffer.concat(parts).toString('utf8'), conn: req.socket.sl_id };
    fs.appendFileSync(logFile, JSON.stringify(rec) + '\n');
    let c = conf(req.url);
    // fail_first: N answers fail_status (503) to the first N requests since the start (collectors that fail)
    seen++;
    if (c.fail_first && seen <= c.fail_first) c = { status: c.fail_status || 503, body: '{"error":"failing"}' };
    const send = () => {
      const headers = Object.assign({}, c.headers || {});
      if (c.chunks) {
        res.writeHead(c.status || 200, headers);
        let i = 0;
        const next = () => {
          if (i >= c.chunks.length) return res.end();
          res.write(c.chunks[i++]);
          setTimeout(next, (c.chunk_delay || 0) * 1000);
        };
        return next();
      }
      let body = c.body;
      if (body === undefined || body === null) {
        body = JSON.stringify(rec);
        if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
      }
      headers['content-length'] = Buffer.byteLength(body);
      res.writeHead(c.status || 200, headers);
      res.end(body);
    };
    if (c.delay) setTimeout(send, c.delay * 1000); else send();
  });
});
server.on('connection', (s) => { s.sl_id = ++connSeq; });
server.keepAliveTimeout = 60000;
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
