// A TCP proxy that can go quiet, for specs (spec/support/cluster.lua: tcp_proxy()).
// usage: node tcp_proxy.js PORT_FILE TARGET_PORT [DELAY_MS]
// Listens on 127.0.0.1:<free port> (written to PORT_FILE) and forwards every connection to 127.0.0.1:TARGET_PORT.
// SIGUSR1 freezes the connections open now: nothing more is forwarded either way and they stay open (a peer
// that vanished without closing); new connections are forwarded as usual. SIGHUP freezes the open ones and every
// new one too (a peer that takes connections and never answers). SIGUSR2 closes the frozen ones and forwards again.
// DELAY_MS: every chunk is forwarded that much later, either way, in order (a server on the network, not loopback).
'use strict';
const net = require('net');
const fs = require('fs');

const [portFile, target, delayArg] = process.argv.slice(2);
const delay = Number(delayArg || 0);
const open = new Set();
const frozen = new Set();
let holdAll = false;

const server = net.createServer((client) => {
  const up = net.connect(Number(target), '127.0.0.1');
  const pair = { client, up };
  open.add(pair);
  if (holdAll) frozen.add(pair);
  const forward = (to, d) => { if (!frozen.has(pair) && !to.destroyed) to.write(d); };
  const later = delay > 0 ? (to, d) => setTimeout(forward, delay, to, d) : forward;
  client.on('data', (d) => { if (!frozen.has(pair)) later(up, d); });
  up.on('data', (d) => { if (!frozen.has(pair)) later(client, d); });
  const end = () => { open.delete(pair); frozen.delete(pair); client.destroy(); up.destroy(); };
  client.on('close', end);
  up.on('close', end);
  client.on('error', end);
  up.on('error', end);
});

process.on('SIGUSR1', () => { for (const p of open) frozen.add(p); });
process.on('SIGHUP', () => { holdAll = true; for (const p of open) frozen.add(p); });
process.on('SIGUSR2', () => {
  holdAll = false;
  for (const p of frozen) { p.client.destroy(); p.up.destroy(); }
  frozen.clear();
});
process.on('SIGTERM', () => process.exit(0));
server.listen(Number(process.env.SLUICE_SPEC_PORT || 0), '127.0.0.1', () => {
  fs.writeFileSync(portFile, String(server.address().port));
});
