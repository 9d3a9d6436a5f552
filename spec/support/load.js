// A bounded client load for cluster specs (started by spec/support/cluster.lua: load()).
// usage: node load.js STATS_FILE URL [URL...]   (env LOAD_CONCURRENCY=2, LOAD_PAUSE_MS=10, LOAD_MAX_SECONDS=300)
// LOAD_CONCURRENCY loops, each sending GET requests round-robin over the URLs on keep-alive connections, pausing
// LOAD_PAUSE_MS between requests (so the load stays bounded), for at most LOAD_MAX_SECONDS. Every 100 ms, and at
// exit (SIGTERM), STATS_FILE gets {sent, ok, failed, by_status: {...}, errors: [last 20 failures]}: counters only
// grow, so a spec reads them before and after a scenario. A request fails when it gets no response (connection
// refused or reset, timeout after 5 s) or a status other than 200.
'use strict';
const http = require('http');
const fs = require('fs');

const [statsFile, ...urls] = process.argv.slice(2);
const concurrency = Number(process.env.LOAD_CONCURRENCY || 2);
const pause = Number(process.env.LOAD_PAUSE_MS || 10);
const maxSeconds = Number(process.env.LOAD_MAX_SECONDS || 300);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const stats = { sent: 0, ok: 0, failed: 0, by_status: {}, errors: [] };
let stopping = false;
let next = 0;

function fail(url, what) {
  stats.failed++;
  stats.errors.push(`${new Date().toISOString()} ${url}: ${what}`);
  if (stats.errors.length > 20) stats.errors.shift();
}

function one(done) {
  const url = urls[next++ % urls.length];
  stats.sent++;
  let finished = false;
  const finish = () => { if (!finished) { finished = true; done(); } };
  const req = http.get(url, { agent, timeout: 5000 }, (res) => {
    res.resume();
    res.on('end', () => {
      stats.by_status[res.statusCode] = (stats.by_status[res.statusCode] || 0) + 1;
      if (res.statusCode === 200) stats.ok++; else fail(url, `status ${res.statusCode}`);
      finish();
    });
    res.on('error', (e) => { fail(url, `response: ${e.message}`); finish(); });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => { fail(url, e.message); finish(); });
}

function loop() {
  if (stopping) return;
  one(() => setTimeout(loop, pause));
}

function write() {
  fs.writeFileSync(statsFile + '.tmp', JSON.stringify(stats));
  fs.renameSync(statsFile + '.tmp', statsFile);
}

for (let i = 0; i < concurrency; i++) loop();
const ticker = setInterval(write, 100);
function stop() {
  stopping = true;
  clearInterval(ticker);
  write();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, maxSeconds * 1000);
