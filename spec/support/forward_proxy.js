// A forward HTTP proxy for specs (spec/http_proxy_env_spec.lua): usage: node forward_proxy.js LOG_FILE PORT_FILE
// Listens on 127.0.0.1:<free port> (written to PORT_FILE). Every name it is asked for is taken to be this
// machine (127.0.0.1), so specs can use names only the proxy "resolves" (e.g. plain.test): a request that
// arrives at the upstream by such a name went through the proxy.
//   GET http://host:port/path HTTP/1.1   absolute-form: forwarded to 127.0.0.1:port (keep-alive both sides)
//   CONNECT host:port / [v6]:port        a tunnel to 127.0.0.1:port; a host starting with "denied." gets a
//                                        403, a target that is not host:port (e.g. an unbracketed IPv6) a 400
//   GET /path (origin-form)              400: not a proxy request
// Each request is appended, before it is served, as one JSON line to LOG_FILE:
//   {method, target (the request-target as received), connect (bool), host (Host header), conn (client
//    connection number)}
'use strict';
const http = require('http');
const net = require('net');
const fs = require('fs');

const [logFile, portFile] = process.argv.slice(2);
let connSeq = 0;
const agent = new http.Agent({ keepAlive: true });

function record(req, connect) {
  const rec = { method: req.method, target: req.url, connect, host: req.headers.host || null,
                conn: req.socket.sl_id };
  fs.appendFileSync(logFile, JSON.stringify(rec) + '\n');
}

function refuse(sock, status, reason) {
  sock.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${reason.length}\r\n` +
    `Connection: close\r\n\r\n${reason}`);
}

const server = http.createServer((req, res) => {
  record(req, false);
  let u;
  try { u = new URL(req.url); } catch (e) { u = null; }
  if (!u || u.protocol !== 'http:') {
    res.writeHead(400, { 'content-type': 'text/plain' });
    return res.end('absolute-form http:// request-target expected');
  }
  const up = http.request({ host: '127.0.0.1', port: u.port || 80, method: req.method,
                            path: u.pathname + u.search, headers: req.headers, agent }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
  });
  up.on('error', (e) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('proxy: ' + e.message);
  });
  req.pipe(up);
});

server.on('connect', (req, sock, head) => {
  record(req, true);
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(req.url) || /^([^:[\]]+):(\d+)$/.exec(req.url);
  if (!m) return refuse(sock, 400, 'Bad Request');
  if (m[1].startsWith('denied.')) return refuse(sock, 403, 'Forbidden');
  let open = false;
  const up = net.connect(Number(m[2]), '127.0.0.1', () => {
    open = true;
    sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head && head.length) up.write(head);
    up.pipe(sock);
    sock.pipe(up);
  });
  up.on('error', () => (open ? sock.destroy() : refuse(sock, 502, 'Bad Gateway')));
  sock.on('error', () => up.destroy());
});

server.on('connection', (s) => { s.sl_id = ++connSeq; });
server.keepAliveTimeout = 60000;
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
