// Sluice dashboard: polls GET /dashboard/data once a second with the session token (kept in this page's memory
// only: no cookie, no URL, gone when the tab closes), keeps the last samples and shows rates, quantiles over the
// last 10 s, totals and the breakdowns. Every number is computed from the cumulative counters the gateway sends.
'use strict';
(function () {
  const WINDOW = 120;      // seconds of history in the charts
  const QWINDOW = 10;      // seconds the quantiles and rates look back
  const $ = (id) => document.getElementById(id);
  let token = null;
  let timer = null;
  let samples = [];        // {t, d} (t: seconds, d: the data object)
  let dim = 'provider';
  const charts = {};
  const series = { t: [], rps: [], eps: [], p50: [], p95: [], p99: [], ttft50: [], ttft95: [], tin: [], tout: [], cost: [] };

  const fmt = (n, d) => (n === null || n === undefined || !isFinite(n)) ? '-' :
    Number(n).toLocaleString('en-US', { maximumFractionDigits: d === undefined ? 0 : d, minimumFractionDigits: 0 });
  const usd = (n) => '$' + (n >= 1 ? fmt(n, 2) : fmt(n, 6));
  const ms = (s) => (s === null || !isFinite(s)) ? '-' : (s * 1000 < 10 ? (s * 1000).toFixed(1) : Math.round(s * 1000));

  function text(id, v) { const el = $(id); if (el) el.textContent = v; }

  function setStatus(msg, cls) { const el = $('status'); el.textContent = msg; el.className = 'status ' + (cls || ''); }

  // ---- login
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('key').value;
    $('key').value = '';
    text('login-error', '');
    try {
      const res = await fetch('/dashboard/login', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ key }), cache: 'no-store' });
      const body = await res.json().catch(() => ({}));
      if (!res.ok || !body.token) { text('login-error', (body.error && body.error.message) || ('login failed: ' + res.status)); return; }
      token = body.token;
      try { sessionStorage.setItem('sluice-dashboard', token); } catch (e) { /* storage off: memory only */ }
      start();
    } catch (e) {
      text('login-error', 'cannot reach the gateway: ' + e.message);
    }
  });

  $('logout').addEventListener('click', async () => {
    const t = token;
    stop();
    if (t) await fetch('/dashboard/logout', { method: 'POST', headers: { authorization: 'Bearer ' + t } }).catch(() => {});
  });

  function stop(msg) {
    token = null;
    try { sessionStorage.removeItem('sluice-dashboard'); } catch (e) { /* ignore */ }
    if (timer) clearInterval(timer);
    timer = null;
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('logout').hidden = true;
    setStatus(msg || 'not connected');
  }

  function start() {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('logout').hidden = false;
    samples = [];
    for (const k of Object.keys(series)) series[k].length = 0;
    makeCharts();
    poll();
    timer = setInterval(poll, 1000);
  }

  // ---- data
  async function poll() {
    if (!token) return;
    let res;
    try {
      res = await fetch('/dashboard/data', { headers: { authorization: 'Bearer ' + token }, cache: 'no-store' });
    } catch (e) { setStatus('gateway unreachable', 'down'); return; }
    if (res.status === 401) { stop('session ended: log in again'); return; }
    if (!res.ok) { setStatus('error ' + res.status, 'down'); return; }
    const d = await res.json();
    const t = performance.now() / 1000;
    samples.push({ t, d });
    while (samples.length > WINDOW + 2) samples.shift();
    setStatus('live, updated ' + new Date().toLocaleTimeString(), 'live');
    render();
  }

  // the sample about `secs` ago (or the oldest)
  function back(secs) {
    const last = samples[samples.length - 1];
    for (let i = samples.length - 2; i >= 0; i--) if (last.t - samples[i].t >= secs - 0.05) return samples[i];
    return samples.length > 1 ? samples[0] : null;
  }

  function hdelta(a, b) { // histogram b - a (a may be missing)
    if (!b || !b.bounds) return null;
    const counts = b.counts.map((c, i) => c - ((a && a.counts && a.counts[i]) || 0));
    return { bounds: b.bounds, counts };
  }

  // quantile from cumulative bucket counts, linear inside the bucket (as Prometheus' histogram_quantile)
  function quantile(q, h) {
    if (!h) return null;
    const total = h.counts[h.counts.length - 1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let prevCount = 0, prevBound = 0;
    for (let i = 0; i < h.counts.length; i++) {
      if (h.counts[i] >= rank) {
        if (i >= h.bounds.length) return h.bounds[h.bounds.length - 1];
        const inBucket = h.counts[i] - prevCount;
        const frac = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
        return prevBound + (h.bounds[i] - prevBound) * frac;
      }
      prevCount = h.counts[i]; prevBound = h.bounds[i];
    }
    return null;
  }

  function render() {
    const cur = samples[samples.length - 1].d;
    const prev1 = back(1), prevQ = back(QWINDOW);
    const T = cur.totals;
    text('total-requests', fmt(T.http_requests));
    text('total-ai-errors', fmt(T.ai_errors));
    text('total-input-tokens', fmt(T.input_tokens));
    text('total-output-tokens', fmt(T.output_tokens));
    text('total-cost', usd(T.cost));
    let rps = 0, eps = 0, tps = 0, tin = 0, tout = 0, cpm = 0, erate = null;
    if (prev1) {
      const dt = samples[samples.length - 1].t - prev1.t, P = prev1.d.totals;
      if (dt > 0) {
        rps = (T.http_requests - P.http_requests) / dt;
        eps = ((T.http_errors - P.http_errors) + (T.ai_errors - P.ai_errors)) / dt;
        tin = (T.input_tokens - P.input_tokens) / dt;
        tout = (T.output_tokens - P.output_tokens) / dt;
        tps = tin + tout;
        cpm = (T.cost - P.cost) / dt * 60;
      }
    }
    if (prevQ) { // error rate over the window
      const P = prevQ.d.totals, n = T.ai_requests - P.ai_requests;
      erate = n > 0 ? (T.ai_errors - P.ai_errors) / n : null;
    }
    const lat = hdelta(prevQ && prevQ.d.hist.ai_latency, cur.hist.ai_latency);
    const ttft = hdelta(prevQ && prevQ.d.hist.ttft, cur.hist.ttft);
    const l = [quantile(0.5, lat), quantile(0.95, lat), quantile(0.99, lat)];
    const f = [quantile(0.5, ttft), quantile(0.95, ttft), quantile(0.99, ttft)];
    text('rps', fmt(rps, 1));
    text('error-rate', erate === null ? '-' : fmt(erate * 100, 1) + '%');
    text('latency', l[0] === null ? '-' : l.map(ms).join(' / ') + ' ms');
    text('ttft', f[0] === null ? '-' : f.map(ms).join(' / ') + ' ms');
    text('tps', fmt(tps, 1));
    text('cost-rate', usd(cpm));

    const now = Date.now() / 1000;
    const s = series;
    s.t.push(now); s.rps.push(rps); s.eps.push(eps); s.p50.push(l[0] === null ? null : l[0] * 1000);
    s.p95.push(l[1] === null ? null : l[1] * 1000); s.p99.push(l[2] === null ? null : l[2] * 1000);
    s.ttft50.push(f[0] === null ? null : f[0] * 1000); s.ttft95.push(f[1] === null ? null : f[1] * 1000);
    s.tin.push(tin); s.tout.push(tout); s.cost.push(cpm);
    if (s.t.length > WINDOW) for (const k of Object.keys(s)) s[k].shift();
    if (charts.rps) {
      charts.rps.setData([s.t, s.rps, s.eps]);
      charts.latency.setData([s.t, s.p50, s.p95, s.p99, s.ttft50, s.ttft95]);
      charts.tokens.setData([s.t, s.tin, s.tout]);
      charts.cost.setData([s.t, s.cost]);
    }
    renderBreakdown(cur, prev1);
    renderTargets(cur);
    renderNodes(cur.nodes || [], cur.time);
    renderRecent(cur.recent || []);
  }

  function cell(tr, v) { const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); return td; }

  function renderBreakdown(cur, prev1) {
    const rows = cur.by[dim] || {};
    const before = prev1 ? (prev1.d.by[dim] || {}) : {};
    const dt = prev1 ? samples[samples.length - 1].t - prev1.t : 0;
    const tbody = document.querySelector('#breakdown tbody');
    tbody.textContent = '';
    const keys = Object.keys(rows).sort((a, b) => rows[b].requests - rows[a].requests || a.localeCompare(b));
    for (const k of keys) {
      const r = rows[k], p = before[k] || { requests: 0 };
      const tr = document.createElement('tr');
      tr.dataset.key = k;
      cell(tr, k === '' ? '(none)' : k);
      cell(tr, fmt(r.requests)).className = 'requests';
      cell(tr, dt > 0 ? fmt((r.requests - p.requests) / dt, 1) : '-');
      cell(tr, fmt(r.errors)).className = 'errors';
      cell(tr, fmt(r.input_tokens)).className = 'input-tokens';
      cell(tr, fmt(r.output_tokens)).className = 'output-tokens';
      cell(tr, usd(r.cost)).className = 'cost';
      tbody.appendChild(tr);
    }
  }

  function renderTargets(cur) {
    const tbody = document.querySelector('#targets tbody');
    tbody.textContent = '';
    const names = new Set([...cur.breakers.map((b) => b.target), ...Object.keys(cur.inflight || {}), ...Object.keys(cur.queues || {})]);
    const state = {};
    for (const b of cur.breakers) state[b.target] = b.state;
    for (const n of [...names].sort()) {
      const tr = document.createElement('tr');
      cell(tr, n);
      const st = state[n] || '-';
      cell(tr, st.replace('_', '-')).className = 'state-' + st;
      cell(tr, fmt((cur.inflight || {})[n] || 0));
      cell(tr, fmt((cur.queues || {})[n] || 0));
      tbody.appendChild(tr);
    }
    if (names.size === 0) {
      const tr = document.createElement('tr');
      const td = cell(tr, 'no ai-proxy-multi targets');
      td.colSpan = 4;
      tbody.appendChild(tr);
    }
  }

  // the cluster's nodes as this node sees them (its config center's list; this node alone without one)
  function renderNodes(list, now) {
    const tbody = document.querySelector('#nodes tbody');
    tbody.textContent = '';
    const ago = (t) => (typeof t === 'number' && now) ? fmt(Math.max(0, now - t)) + ' s ago' : '-';
    const when = (t) => typeof t === 'number' ? new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '') : '-';
    for (const n of list) {
      const tr = document.createElement('tr');
      tr.dataset.id = n.id || '';
      if (n.self) tr.className = 'self';
      const name = cell(tr, (n.id || '?') + (n.self ? ' (this node)' : ''));
      name.className = 'node-id';
      if (n.conflict) {
        const warn = document.createElement('span');
        warn.className = 'conflict';
        warn.textContent = ' id used twice';
        name.appendChild(warn);
      }
      cell(tr, n.version || '-');
      cell(tr, n.hostname ? n.hostname + (n.pid ? ' (pid ' + n.pid + ')' : '') : '-');
      cell(tr, Array.isArray(n.listen) && n.listen.length ? n.listen.join(', ') : '-');
      cell(tr, n.revision === undefined ? '-' : String(n.revision)).className = 'revision';
      const mc = n.memcached;
      cell(tr, mc ? mc.up + '/' + mc.servers + ' up' : '-').className = mc ? 'state-' + mc.circuit : '';
      cell(tr, when(n.started_at));
      cell(tr, ago(n.last_seen)).className = 'last-seen';
      tbody.appendChild(tr);
    }
  }

  function renderRecent(list) {
    const tbody = document.querySelector('#recent tbody');
    tbody.textContent = '';
    for (const r of list) {
      const tr = document.createElement('tr');
      cell(tr, (r.time || '').replace('T', ' ').replace(/\.\d+Z$/, ''));
      cell(tr, r.consumer || '-');
      cell(tr, r.model || r.requested_model || '-');
      cell(tr, String(r.status || '-'));
      cell(tr, fmt((r.input_tokens || 0) + (r.output_tokens || 0)));
      cell(tr, usd(r.cost || 0));
      cell(tr, r.latency_ms === undefined ? '-' : fmt(r.latency_ms) + ' ms');
      tbody.appendChild(tr);
    }
  }

  // ---- charts (uPlot)
  function chartWidth(el) { return Math.max(200, el.clientWidth || el.parentElement.clientWidth - 24); }

  function makeChart(id, label, lines) {
    const el = $(id);
    el.textContent = '';
    const colors = ['#4fb3ff', '#ff6b6b', '#f5c542', '#53d769', '#c792ea'];
    const opts = {
      width: chartWidth(el), height: 180,
      axes: [{ stroke: '#8a96a3', grid: { stroke: '#263240' } }, { stroke: '#8a96a3', grid: { stroke: '#263240' }, size: 60 }],
      series: [{}].concat(lines.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5, spanGaps: true }))),
      scales: { x: { time: true } },
      legend: { live: false },
    };
    const data = [[]].concat(lines.map(() => []));
    return new uPlot(opts, data, el);
  }

  function makeCharts() {
    if (typeof uPlot === 'undefined') { setStatus('charting library missing', 'down'); return; }
    for (const c of Object.values(charts)) c.destroy();
    charts.rps = makeChart('chart-rps', 'req/s', ['requests/s', 'errors/s']);
    charts.latency = makeChart('chart-latency', 'ms', ['p50', 'p95', 'p99', 'TTFT p50', 'TTFT p95']);
    charts.tokens = makeChart('chart-tokens', 'tokens/s', ['input', 'output']);
    charts.cost = makeChart('chart-cost', 'USD/min', ['cost/min']);
  }

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [name, c] of Object.entries(charts)) c.setSize({ width: chartWidth($('chart-' + name)), height: 180 });
    }, 100);
  });

  for (const b of document.querySelectorAll('.tabs button')) {
    b.addEventListener('click', () => {
      dim = b.dataset.dim;
      for (const x of document.querySelectorAll('.tabs button')) x.setAttribute('aria-selected', String(x === b));
      text('dim-name', b.textContent);
      if (samples.length) renderBreakdown(samples[samples.length - 1].d, back(1));
    });
  }

  // a reload of the tab keeps the session (sessionStorage: this tab only, gone when it closes)
  try {
    const saved = sessionStorage.getItem('sluice-dashboard');
    if (saved && /^[0-9a-f]{64}$/.test(saved)) { token = saved; start(); }
  } catch (e) { /* storage off */ }
})();
