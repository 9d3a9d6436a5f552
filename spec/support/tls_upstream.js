// HTTPS upstream for specs: node tls_upstream.js CERT KEY PORT_FILE
// Answers every request with JSON {path, conn, tls: true}; /big?n=BYTES sends BYTES of 'x'.
'use strict';
const https = require('https');
const fs = require('fs');
const [cert, key, portFile] = process.argv.slice(2);
let seq = 0;
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  const [p, q] = req.url.split('?');
  if (p === '/big') {
    const n = parseInt((q || '').replace('n=', ''), 10) || 1048576;
    res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
    const piece = Buffer.alloc(65536, 'x');
    let left = n;
    const pump = () => {
      while (left > 0) {
        const k = Math.min(left, piece.length);
        left -= k;
        if (!res.write(k === piece.length ? piece : piece.subarray(0, k))) return res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  req.resume();
  req.on('end', () => {
    const b = JSON.stringify({ path: req.url, conn: req.socket.sl_id, tls: true, sni: req.socket.servername });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
    res.end(b);
  });
});
server.on('secureConnection', (s) => { s.sl_id = ++seq; });
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
