// The live dashboard in headless Chromium (puppeteer-core, Debian's /usr/bin/chromium): log in with the admin
// key, drive traffic through the gateway, and check that the numbers the page shows are the ones sent; a wrong key
// is refused; no JS error in the console; screenshots (wide and phone-sized) go to OUT.
// env: GATEWAY, ADMIN, ADMIN_KEY, OUT
import { test } from 'node:test';
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';
import path from 'node:path';

const { GATEWAY, ADMIN, ADMIN_KEY, OUT } = process.env;

async function chat(consumerKey, n) {
  for (let i = 0; i < n; i++) {
    const res = await fetch(GATEWAY + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + consumerKey },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello ' + i }] }),
    });
    assert.equal(res.status, 200, await res.text());
  }
}

async function waitText(page, sel, want, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await page.$eval(sel, (el) => el.textContent.trim()).catch(() => null);
    if (last === want) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(last, want, `${sel} never showed ${want}`);
}

test('dashboard: login, live numbers, breakdowns, screenshots, no JS errors', { timeout: 90000 }, async () => {
  fs.mkdirSync(OUT, { recursive: true });
  const dataDir = fs.mkdtempSync(path.join(OUT, 'chromium-'));
  const browser = await puppeteer.launch({
    executablePath: '/usr/bin/chromium', headless: true, userDataDir: dataDir,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run', '--user-data-dir=' + dataDir],
  });
  const errors = [];
  try {
    const page = await browser.newPage();
    // a 401 answer (the refused login, a poll racing the logout) is logged by Chromium as a failed resource: not
    // a script error
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource: .* 401/.test(m.text())) errors.push('console: ' + m.text());
    });
    page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
    page.on('requestfailed', (r) => errors.push('request failed: ' + r.url()));
    await page.setViewport({ width: 1440, height: 1000 });
    await page.goto(ADMIN + '/dashboard', { waitUntil: 'networkidle0' });
    assert.equal(await page.$eval('#app-view', (el) => el.hidden), true);

    // a wrong key is refused and shows an error
    await page.type('#key', 'not-the-key-1234');
    await page.click('#login-form button[type=submit]');
    await waitText(page, '#login-error', 'wrong admin key');

    await page.type('#key', ADMIN_KEY);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#app-view:not([hidden])', { timeout: 10000 });
    assert.ok(!page.url().includes(ADMIN_KEY), 'the key is not in the URL');
    const cookies = await page.cookies();
    assert.equal(cookies.length, 0, 'no cookie');

    // the nodes table: without a config center, this node alone (its id as GET /admin/status has it)
    const st = await (await fetch(ADMIN + '/admin/status', { headers: { 'x-api-key': ADMIN_KEY } })).json();
    await page.waitForSelector('#nodes tbody tr.self', { timeout: 10000 });
    assert.equal(await page.$$eval('#nodes tbody tr', (rows) => rows.length), 1);
    assert.equal(await page.$eval('#nodes tbody tr.self td.node-id', (el) => el.textContent), st.node_id + ' (this node)');
    assert.match(await page.$eval('#nodes tbody tr.self td.last-seen', (el) => el.textContent), /^\d+ s ago$/);

    // traffic: 6 requests for alice, 4 for bob (the mock provider: 17 input, 5 output tokens each)
    await chat('alice-key', 6);
    await chat('bob-key', 4);
    await waitText(page, '#total-requests', '10');
    await waitText(page, '#total-input-tokens', String(17 * 10));
    await waitText(page, '#total-output-tokens', String(5 * 10));
    const cost = 10 * (17 * 0.15 + 5 * 0.6) / 1e6;
    await waitText(page, '#total-cost', '$' + cost.toFixed(6).replace(/0+$/, ''));
    // breakdown by consumer
    await page.click('.tabs button[data-dim=consumer]');
    await waitText(page, '#breakdown tr[data-key=alice] td.requests', '6');
    await waitText(page, '#breakdown tr[data-key=bob] td.requests', '4');
    await waitText(page, '#breakdown tr[data-key=bob] td.input-tokens', String(17 * 4));
    // the audit records show up
    await page.waitForFunction(() => document.querySelectorAll('#recent tbody tr').length >= 10, { timeout: 10000 });
    // live: a second burst moves the totals and requests/s without a reload
    const navs = [];
    page.on('framenavigated', () => navs.push(1));
    await chat('alice-key', 5);
    await waitText(page, '#total-requests', '15');
    assert.equal(navs.length, 0, 'the page did not reload');
    const latency = await page.$eval('#latency', (el) => el.textContent);
    assert.match(latency, /ms$/);
    await new Promise((r) => setTimeout(r, 1200));
    await page.screenshot({ path: path.join(OUT, 'dashboard-wide.png'), fullPage: true });
    // (a change to a mobile viewport reloads the page: the session comes back from sessionStorage)
    await page.setViewport({ width: 390, height: 844, isMobile: true, deviceScaleFactor: 2 });
    await page.waitForSelector('#app-view:not([hidden])', { timeout: 10000 });
    await waitText(page, '#total-requests', '15');
    await new Promise((r) => setTimeout(r, 3500));
    // on a phone nothing is wider than the screen (tables scroll inside their cards)
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, 'page wider than the phone screen by ' + overflow + 'px');
    await page.screenshot({ path: path.join(OUT, 'dashboard-phone.png'), fullPage: true });

    // logging out ends the session on the server too
    const tok = await page.evaluate(() => sessionStorage.getItem('sluice-dashboard'));
    assert.match(tok, /^[0-9a-f]{64}$/);
    await page.click('#logout');
    await page.waitForSelector('#login-view:not([hidden])');
    await new Promise((r) => setTimeout(r, 300));
    const res = await fetch(ADMIN + '/dashboard/data', { headers: { authorization: 'Bearer ' + tok } });
    assert.equal(res.status, 401);
  } finally {
    await browser.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  assert.deepEqual(errors, [], 'JS errors in the page');
});
