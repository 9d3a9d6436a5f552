// A raw TCP server that answers HTTP requests badly on purpose, for the HTTP client specs.
// usage: node bad_upstream.js PORT_FILE   (listens on 127.0.0.1:<free port>, written to PORT_FILE)
// The request path picks the behaviour:
//   /ok            200 JSON with Content-Length, keep-alive; body {"conn": N, "n": requests on the connection}
//                  (?ms=N: after N ms)
//   /chunked       200 chunked in three pieces
//   /close         200 without length, body ends with the connection
//   /reset         Content-Length 100000, 1000 bytes, then a TCP reset
//   /slow          reads the request, never answers
//   /slowbody      headers at once, body after 5 s
//   /truncated     chunked, one chunk, then the connection closes without the last chunk
//   /badstatus     an invalid status line
//   /hugeheaders   200 with 200 KB of headers
//   /big?n=BYTES   200 with BYTES of 'x' (chunked writes of 64 KB, honouring back-pressure)
//   /echo          200 JSON {method, path, headers, body}
// Upstream fault suite (spec/upstream_faults_spec.lua); ms= is the pace (default 1000):
//   /slowhdr?ms=N        the status line, then one header byte every N ms: the head never ends
//   /continue-loop?ms=N  "100 Continue" every N ms, forever
//   /interim?n=N&size=S  N interim responses (102) with S bytes of headers each, then 200 "ok"
//   /status?code=C       a response with status code C (e.g. 600, 099)
//   /version?v=V         a 200 with the status line's version V (e.g. HTTP/2.0)
//   /stall               Content-Length 100000, 1000 bytes, then nothing (the connection stays open)
//   /rst-head            a TCP reset before any response byte
//   /rst-midhead         half a head, then a TCP reset
//   /early               (at the head, body not read) 200 "early" and Connection: keep-alive; the body that
//                        follows is read and dropped without being parsed as requests
//   /stale               200; from now on every connection open at this moment closes (unanswered) when its
//                        next request arrives: kept-alive connections the gateway holds have gone stale
//   /seen?p=PATH         200 {"n": requests received for PATH (counted even when left unanswered)}
//   /open                200 {"open": connections open now, this one excluded}
'use strict';
const net = require('net');
const fs = require('fs');

const portFile = process.argv[2];
let connSeq = 0;
const open = new Set();
const seen = {};

function arg(q, name, dflt) {
  const m = new RegExp('(?:^|&)' + name + '=([^&]*)').exec(q || '');
  return m ? decodeURIComponent(m[1]) : dflt;
}

// Writes every ms until the socket closes.
function drip(sock, ms, piece) {
  const t = setInterval(() => { if (sock.destroyed) clearInterval(t); else sock.write(piece); }, ms);
  sock.on('close', () => clearInterval(t));
}

function respond(sock, state, method, path, headers, body) {
  const [p, q] = path.split('?');
  const ka = 'Connection: keep-alive\r\n';
  switch (p) {
    case '/ok': {
      const b = JSON.stringify({ conn: state.id, n: state.n });
      const send = () => sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n${ka}\r\n${b}`);
      const ms = parseInt(arg(q, 'ms', '0'), 10);
      return ms > 0 ? setTimeout(send, ms) : send();
    }
    case '/echo': {
      const b = JSON.stringify({ method, path, headers, body, conn: state.id });
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n${ka}\r\n${b}`);
    }
    case '/chunked':
      return sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n' +
        '5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n');
    case '/close':
      sock.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end');
      return sock.end();
    case '/reset':
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n' + 'r'.repeat(1000));
      return setTimeout(() => sock.resetAndDestroy(), 50);
    case '/slow':
      return;
    case '/slowhdr':
      sock.write('HTTP/1.1 200 OK\r\nX-Slow: ');
      return drip(sock, parseInt(arg(q, 'ms', '1000'), 10), 'a');
    case '/continue-loop':
      return drip(sock, parseInt(arg(q, 'ms', '1000'), 10), 'HTTP/1.1 100 Continue\r\n\r\n');
    case '/interim': {
      const n = parseInt(arg(q, 'n', '1'), 10), size = parseInt(arg(q, 'size', '0'), 10);
      const one = 'HTTP/1.1 102 Processing\r\n' + (size > 0 ? `X-Pad: ${'p'.repeat(size)}\r\n` : '') + '\r\n';
      for (let i = 0; i < n; i++) sock.write(one);
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${ka}\r\nok`);
    }
    case '/status':
      return sock.write(`HTTP/1.1 ${arg(q, 'code', '600')} Odd\r\nContent-Length: 2\r\n${ka}\r\nok`);
    case '/version':
      return sock.write(`${arg(q, 'v', 'HTTP/2.0')} 200 OK\r\nContent-Length: 2\r\n${ka}\r\nok`);
    case '/stall':
      return sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n' + 's'.repeat(1000));
    case '/rst-head':
      return sock.resetAndDestroy();
    case '/rst-midhead':
      sock.write('HTTP/1.1 200 OK\r\nContent-Le');
      return setTimeout(() => sock.resetAndDestroy(), 50);
    case '/stale': {
      for (const s of open) if (s !== sock) s.sl_stale = true;
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${ka}\r\nok`);
    }
    case '/seen': {
      const b = JSON.stringify({ n: seen[arg(q, 'p', '')] || 0 });
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n${ka}\r\n${b}`);
    }
    case '/open': {
      const b = JSON.stringify({ open: open.size - 1 });
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n${ka}\r\n${b}`);
    }
    case '/slowbody':
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n');
      return setTimeout(() => sock.write('late'), 5000);
    case '/truncated':
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      return setTimeout(() => sock.end(), 50);
    case '/noname': // a first header field with an empty name (llhttp lets it through)
      return sock.write(`HTTP/1.1 200 OK\r\n: ${'n'.repeat(3000)}\r\nContent-Length: 2\r\n${ka}\r\nok`);
    case '/noname2': // ... and one after a field whose value was empty
      return sock.write(`HTTP/1.1 200 OK\r\nX-Empty:\r\n: stray\r\nContent-Length: 2\r\n${ka}\r\nok`);
    case '/eofempty': // no length: the body ends with the connection, and is empty (the head ends a write)
      sock.write('HTTP/1.1 200 OK\r\nX-Eof: yes\r\n\r\n');
      return setTimeout(() => sock.end(), 50);
    case '/badname': // a field name with a space in it (llhttp lets it through)
      return sock.write(`HTTP/1.1 200 OK\r\nX-Bad Name: v\r\nContent-Length: 2\r\n${ka}\r\nok`);
    case '/trailers': { // many trailer fields after a chunked body: more than the head's own header bytes
      let t = '';
      for (let i = 0; i < 100; i++) t += `X-Trailer-${i}: ${'t'.repeat(200)}\r\n`;
      return sock.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Multi: a\r\n${ka}\r\n` +
        `5\r\nhello\r\n0\r\n${t}\r\n`);
    }
    case '/hugetrailers': { // trailers past the 64 KiB cap of a head
      let t = '';
      for (let i = 0; i < 100; i++) t += `X-Trailer-${i}: ${'t'.repeat(1000)}\r\n`;
      return sock.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n${ka}\r\n5\r\nhello\r\n0\r\n${t}\r\n`);
    }
    case '/empty': // a keep-alive answer with an empty body, the head ending where the write ends
      return sock.write(`HTTP/1.1 200 OK\r\nX-Empty-Body: yes\r\nContent-Length: 0\r\n${ka}\r\n`);
    case '/badstatus':
      return sock.write('HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n');
    case '/hugeheaders': {
      let h = 'HTTP/1.1 200 OK\r\n';
      for (let i = 0; i < 200; i++) h += `X-Filler-${i}: ${'y'.repeat(1000)}\r\n`;
      return sock.write(h + 'Content-Length: 2\r\n\r\nok');
    }
    case '/big': {
      const n = parseInt((q || '').replace('n=', ''), 10) || 1048576;
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${n}\r\n${ka}\r\n`);
      const piece = Buffer.alloc(65536, 'x');
      let left = n;
      const pump = () => {
        while (left > 0) {
          const k = Math.min(left, piece.length);
          left -= k;
          if (!sock.write(k === piece.length ? piece : piece.subarray(0, k))) return sock.once('drain', pump);
        }
      };
      return pump();
    }
    default:
      return sock.write(`HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n${ka}\r\n`);
  }
}

const server = net.createServer((sock) => {
  const state = { id: ++connSeq, n: 0 };
  let buf = Buffer.alloc(0);
  let drop = 0; // /early: body bytes still to be dropped
  open.add(sock);
  sock.on('close', () => open.delete(sock));
  sock.on('error', () => {});
  sock.on('data', (d) => {
    if (drop > 0) {
      const k = Math.min(drop, d.length);
      drop -= k;
      d = d.subarray(k);
    }
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const [method, path] = head[0].split(' ');
      const headers = {};
      for (const l of head.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const len = parseInt(headers['content-length'] || '0', 10);
      if (path.split('?')[0] === '/early') {
        seen['/early'] = (seen['/early'] || 0) + 1;
        const rest = buf.length - (end + 4);
        drop = Math.max(0, len - rest);
        buf = buf.subarray(Math.min(buf.length, end + 4 + len));
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nearly`);
        continue;
      }
      if (buf.length < end + 4 + len) return;
      const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
      buf = buf.subarray(end + 4 + len);
      state.n++;
      const p = path.split('?')[0];
      seen[p] = (seen[p] || 0) + 1;
      if (sock.sl_stale) return sock.destroy(); // a kept-alive connection that went stale: closed, unanswered
      respond(sock, state, method, path, headers, body);
    }
  });
});
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
