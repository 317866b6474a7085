// Drives the demo's own page (GET /) in Debian's Chromium through puppeteer-core: sign
// in, one request, a batch of 8, a replay after the batch window, sign-out. page.sh
// starts the servers: BATON_PAGE_SERVERS is "URL WINDOW_MS METRICS_URL" triples (the
// counters are on a listener of their own) separated by commas,
// BATON_SHOTS the folder for the screenshots.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const puppeteer = require('puppeteer-core');

const SERVERS = (process.env.BATON_PAGE_SERVERS || '')
  .split(',')
  .filter(Boolean)
  .map((s) => {
    const [url, windowMs, metricsUrl] = s.trim().split(/\s+/);
    return { url, windowMs: Number(windowMs), metricsUrl };
  });
const SHOTS = process.env.BATON_SHOTS || path.join(__dirname, '..', '..', 'target');
const DEMO_USER = ['demo@example.com', 'demo-password'];
const SHOWN = 6;

async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'baton-page-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
    ],
  });
  return {
    browser,
    async close() {
      await browser.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

// A page that records what it logs, what it fetches, and the tokens on the wire.
async function open(browser, url, viewport) {
  const page = await browser.newPage();
  await page.setViewport(viewport || { width: 1280, height: 900 });
  const seen = { console: [], errors: [], requests: [], exchanges: [] };
  page.on('console', (m) => seen.console.push(m.text()));
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('request', (r) => seen.requests.push({ url: r.url(), at: Date.now() }));
  page.on('response', (r) => {
    const sent = r.request().headers()['access-token'] || null;
    seen.exchanges.push({
      url: r.url(),
      method: r.request().method(),
      status: r.status(),
      sent,
      got: r.headers()['access-token'] || null,
      at: Date.now(),
    });
  });
  const res = await page.goto(url, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  return { page, seen };
}

const short = (t) => t.slice(0, SHOWN) + '…';

// The newest timeline entry of a kind, once the page marks it done.
async function lastDone(page, kind, timeout) {
  const selector = `.entry[data-kind="${kind}"][data-done="yes"]`;
  await page.waitForSelector(selector, { timeout: timeout || 10000 });
  return page.$eval(selector, (e) => ({
    data: { ...e.dataset },
    text: e.innerText,
    rows: [...e.querySelectorAll('.row')].map((r) => ({
      outcome: r.dataset.outcome,
      status: r.dataset.status,
      presented: r.querySelector('.presented').textContent,
      got: r.querySelector('.got').textContent,
      label: r.querySelector('.tag').textContent,
    })),
  }));
}

async function click(page, id) {
  await page.waitForSelector(`#${id}:not([disabled])`);
  await page.click(`#${id}`);
}

async function counter(page, id) {
  return page.$eval(`#${id}`, (e) => Number(e.textContent));
}

for (const server of SERVERS) {
  test(`the page shows rotation, batching, replay and sign-out (batch window ${server.windowMs} ms)`, async () => {
    const chrome = await launch();
    try {
      const { page, seen } = await open(chrome.browser, server.url);
      assert.equal(await page.$eval('#status-window', (e) => e.textContent), (server.windowMs / 1000).toFixed(1) + ' s');
      assert.equal(await page.$eval('#email', (e) => e.value), DEMO_USER[0], 'the demo user is prefilled');
      assert.equal(await page.$eval('#password', (e) => e.value), DEMO_USER[1]);
      assert.equal(await page.$eval('#n', (e) => e.value), '8', 'a batch is 8 by default');
      await page.waitForFunction(() => document.body.dataset.counters === 'on', { timeout: 5000 });

      // Sign in.
      await click(page, 'sign-in-button');
      const signIn = await lastDone(page, 'sign-in');
      assert.equal(signIn.rows[0].status, '200');
      assert.match(signIn.text, /signed in/);
      assert.match(await page.$eval('#status-pill', (e) => e.textContent), /signed in as demo@example\.com/);
      const first = seen.exchanges.find((x) => x.url.endsWith('/auth/sign_in')).got;
      assert.ok(first, 'sign-in answered a token');
      assert.equal(signIn.rows[0].got, short(first));

      // One request: it rotates.
      await click(page, 'send-one');
      const one = await lastDone(page, 'request');
      assert.equal(one.data.rotations, '1');
      assert.equal(one.rows.length, 1);
      assert.equal(one.rows[0].outcome, 'rotated');
      assert.match(one.rows[0].label, /rotated/);
      assert.equal(one.rows[0].presented, short(first));
      assert.notEqual(one.rows[0].got, one.rows[0].presented);

      // A batch of 8: one rotation, seven batched, one shared successor.
      const rotationsBefore = await counter(page, 'c-rotations');
      const marker = seen.exchanges.length;
      await click(page, 'send-batch');
      const batch = await lastDone(page, 'batch');
      assert.equal(batch.rows.length, 8);
      assert.equal(batch.data.rotations, '1', batch.text);
      assert.equal(batch.data.batched, '7', batch.text);
      assert.equal(batch.data.refused, '0', batch.text);
      assert.equal(batch.data.successors, '1', batch.text);
      assert.match(batch.text, /1 rotation\b/);
      assert.match(batch.text, /7 batched/);
      assert.match(batch.text, /one shared successor/);
      const presented = new Set(batch.rows.map((r) => r.presented));
      const got = new Set(batch.rows.map((r) => r.got));
      assert.equal(presented.size, 1, 'the batch presented one token');
      assert.equal(got.size, 1, 'one shared token came back');
      assert.notDeepEqual([...got], [...presented]);
      for (const r of batch.rows) {
        assert.equal(r.status, '200');
        assert.equal(r.outcome, 'shared');
      }
      // The page's picture matches the wire: 8 answers, all one new token.
      const wire = seen.exchanges.slice(marker).filter((x) => x.url.includes('/api/'));
      assert.equal(wire.length, 8);
      assert.equal(new Set(wire.map((x) => x.sent)).size, 1);
      assert.equal(new Set(wire.map((x) => x.got)).size, 1);
      assert.equal(short(wire[0].got), [...got][0]);
      assert.equal(short(wire[0].sent), [...presented][0]);
      // And the server's own counters agree (read from the metrics listener).
      assert.match(batch.text, /rotations \+1, batched \+7/);
      assert.ok((await counter(page, 'c-rotations')) >= rotationsBefore + 1);
      // The page times the window from the first answer that carried the successor.
      const successorSeen = Math.min(...wire.map((x) => x.at));

      // Replay the retired token after the window: refused, after a countdown.
      await page.evaluate(() => {
        const note = document.getElementById('replay-note');
        window.countdown = [];
        new MutationObserver(() => window.countdown.push(note.textContent)).observe(note, { childList: true, characterData: true, subtree: true });
      });
      await click(page, 'replay');
      const replay = await lastDone(page, 'replay', server.windowMs + 10000);
      assert.equal(replay.rows[0].status, '401', replay.text);
      assert.equal(replay.rows[0].outcome, 'refused');
      assert.match(replay.text, /refused/);
      assert.equal(replay.rows[0].presented, [...presented][0], 'it replays the token the batch retired');
      assert.match(replay.text, /replayed \+1/);
      const replayed = seen.requests.filter((r) => r.url.includes('/api/')).pop();
      const waited = replayed.at - successorSeen;
      assert.ok(waited >= server.windowMs, `replayed ${waited} ms after the successor arrived`);
      const countdown = await page.evaluate(() => window.countdown.filter((t) => /^Waiting out the/.test(t)));
      assert.ok(countdown.length >= 2, `a countdown was shown: ${JSON.stringify(countdown)}`);
      assert.match(countdown[0], new RegExp(`Waiting out the ${(server.windowMs / 1000).toFixed(1)} s batch window: \\d+\\.\\d s left`));
      await page.waitForFunction(() => Number(document.getElementById('c-rej-replayed').textContent) >= 1, { timeout: 5000 });

      // Sign out: the last token is refused.
      await click(page, 'sign-out');
      const out = await lastDone(page, 'sign-out');
      assert.equal(out.data.signOut, '200', out.text);
      assert.equal(out.data.probe, '401', out.text);
      assert.deepEqual(out.rows.map((r) => r.outcome), ['signedout', 'refused']);
      assert.equal(out.rows[0].presented, out.rows[1].presented);
      assert.equal(out.rows[0].presented, [...got][0], 'it signs out with the batch\'s successor');
      assert.match(out.text, /last token refused/);
      assert.match(await page.$eval('#status-pill', (e) => e.textContent), /signed out/);

      // Tokens stay short and out of the console; everything came from this origin.
      const body = await page.$eval('body', (e) => e.innerText);
      for (const x of seen.exchanges) {
        for (const t of [x.sent, x.got].filter(Boolean)) assert.ok(!body.includes(t), 'a whole token is on the page');
      }
      // The browser logs its own lines (each 401 is one); none may carry a token.
      for (const line of seen.console) {
        for (const x of seen.exchanges) {
          for (const t of [x.sent, x.got].filter(Boolean)) assert.ok(!line.includes(t.slice(0, SHOWN)), line);
        }
      }
      assert.deepEqual(seen.errors, []);
      // Everything came from this origin, but the counters, from their own listener.
      const origin = new URL(server.url).origin;
      assert.notEqual(new URL(server.metricsUrl).origin, origin, 'the counters are elsewhere');
      for (const r of seen.requests) {
        if (r.url === server.metricsUrl) continue;
        assert.equal(new URL(r.url).origin, origin, r.url);
      }
      assert.ok(seen.requests.some((r) => r.url === server.metricsUrl), 'the counters were read');

      fs.mkdirSync(SHOTS, { recursive: true });
      if (server === SERVERS[SERVERS.length - 1]) {
        await page.evaluate(() => window.scrollTo(0, 0));
        await page.screenshot({ path: path.join(SHOTS, 'page.png') });
        // Not isMobile: puppeteer reloads the page to change that, losing the timeline.
        await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2 });
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(width <= 390, `the phone view scrolls sideways (${width} px)`);
        await page.screenshot({ path: path.join(SHOTS, 'page-phone.png'), fullPage: true });
      }
    } finally {
      await chrome.close();
    }
  });
}

test('the page says the counters are unavailable when it cannot read them', async () => {
  assert.ok(SERVERS.length > 0, 'page.sh names the servers');
  const chrome = await launch();
  try {
    const page = await chrome.browser.newPage();
    await page.setRequestInterception(true);
    page.on('request', (r) => (r.url().endsWith('/metrics') ? r.abort() : r.continue()));
    await page.goto(SERVERS[0].url, { waitUntil: 'load' });
    await page.waitForFunction(() => /Counters unavailable/.test(document.getElementById('counters-note').textContent), { timeout: 5000 });
    assert.equal(await page.$eval('#c-rotations', (e) => e.textContent), '—');
    // The rest of the page still works: sign in and send a batch.
    await click(page, 'sign-in-button');
    await lastDone(page, 'sign-in');
    await click(page, 'send-batch');
    const batch = await lastDone(page, 'batch');
    assert.equal(batch.data.rotations, '1');
    assert.match(batch.text, /counters unavailable: no cross-check/i);
  } finally {
    await chrome.close();
  }
});
