// A raw TCP server that answers HTTP requests badly on purpose, for the HTTP client specs.
// usage: node bad_upstream.js PORT_FILE   (listens on 127.0.0.1:<free port>, written to PORT_FILE)
// The request path picks the behaviour:
//   /ok            200 JSON with Content-Length, keep-alive; body {"conn": N, "n": requests on the connection}
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
'use strict';
const net = require('net');
const fs = require('fs');

const portFile = process.argv[2];
let connSeq = 0;

function respond(sock, state, method, path, headers, body) {
  const [p, q] = path.split('?');
  const ka = 'Connection: keep-alive\r\n';
  switch (p) {
    case '/ok': {
      const b = JSON.stringify({ conn: state.id, n: state.n });
      return sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n${ka}\r\n${b}`);
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
    case '/slowbody':
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n');
      return setTimeout(() => sock.write('late'), 5000);
    case '/truncated':
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      return setTimeout(() => sock.end(), 50);
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
  sock.on('error', () => {});
  sock.on('data', (d) => {
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
      if (buf.length < end + 4 + len) return;
      const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
      buf = buf.subarray(end + 4 + len);
      state.n++;
      respond(sock, state, method, path, headers, body);
    }
  });
});
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
