// Raw-byte-logging upstream for specs that compare what proxies forward (spec/http_differential_spec.lua).
// usage: node raw_upstream.js LOG_FILE PORT_FILE
// Listens on 127.0.0.1:<free port> (written to PORT_FILE). On every connection it reads HTTP/1.1 requests just
// far enough to find where each ends (Content-Length, chunked, or no body), appends each one as a JSON line
// {conn, raw (hex of exactly the bytes received for it)} to LOG_FILE, then answers 200 "ok" (keep-alive).
// Bytes it cannot frame are logged as {conn, raw, unframed: true} when the connection ends.
'use strict';
const net = require('net');
const fs = require('fs');

const [logFile, portFile] = process.argv.slice(2);
let connSeq = 0;

function log(rec) {
  fs.appendFileSync(logFile, JSON.stringify(rec) + '\n');
}

// Length of the first complete request in buf, or 0 when more bytes are needed, or -1 when it cannot be framed.
function requestLength(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return buf.length > 1 << 20 ? -1 : 0;
  const head = buf.subarray(0, headEnd).toString('latin1');
  let cl = null;
  let chunked = false;
  for (const line of head.split('\r\n').slice(1)) {
    const m = /^([^:]+):\s*(.*?)\s*$/.exec(line);
    if (!m) continue;
    const name = m[1].toLowerCase();
    if (name === 'content-length') cl = parseInt(m[2], 10);
    if (name === 'transfer-encoding' && /chunked/i.test(m[2])) chunked = true;
  }
  let pos = headEnd + 4;
  if (chunked) {
    for (;;) {
      const eol = buf.indexOf('\r\n', pos);
      if (eol < 0) return 0;
      const size = parseInt(buf.subarray(pos, eol).toString('latin1').split(';')[0], 16);
      if (Number.isNaN(size)) return -1;
      pos = eol + 2;
      if (size === 0) { // trailers until an empty line
        for (;;) {
          const e = buf.indexOf('\r\n', pos);
          if (e < 0) return 0;
          const empty = e === pos;
          pos = e + 2;
          if (empty) return pos;
        }
      }
      if (buf.length < pos + size + 2) return 0;
      pos += size + 2;
    }
  }
  if (cl !== null) {
    if (Number.isNaN(cl) || cl < 0) return -1;
    return buf.length >= pos + cl ? pos + cl : 0;
  }
  return pos;
}

const server = net.createServer((sock) => {
  const id = ++connSeq;
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const n = requestLength(buf);
      if (n === 0) return;
      if (n < 0) {
        log({ conn: id, raw: buf.toString('hex'), unframed: true });
        buf = Buffer.alloc(0);
        sock.destroy();
        return;
      }
      log({ conn: id, raw: buf.subarray(0, n).toString('hex') });
      buf = buf.subarray(n);
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok');
    }
  });
  sock.on('end', () => {
    if (buf.length > 0) log({ conn: id, raw: buf.toString('hex'), unframed: true });
    buf = Buffer.alloc(0);
    sock.end();
  });
  sock.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
