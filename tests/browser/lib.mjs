// Helpers shared by the browser tests and the screenshot script: headless
// Chromium through puppeteer-core (installed by tests/test_browser.sh into
// $KVL_NPM_DIR), a page watcher that records console errors and failed
// requests, and small HTTP helpers against the server under test.
import { createRequire } from 'node:module';

const require = createRequire((process.env.KVL_NPM_DIR || '.') + '/');
export const puppeteer = require('puppeteer-core');

// extra: more puppeteer launch options (bench/web_viewer.mjs turns off
// puppeteer's own SIGTERM handler to read the page before closing it)
export async function launch(extra = {}) {
  return puppeteer.launch(Object.assign({
    executablePath: process.env.KVL_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  }, extra));
}

// Open base in a new page; problems collects console errors, page errors,
// failed requests and HTTP answers >= 400.
export async function openPage(browser, base, viewport = { width: 1400, height: 1000 }) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  const problems = [];
  page.on('console', (m) => m.type() === 'error' && problems.push('console: ' + m.text()));
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('requestfailed', (r) => {
    const why = r.failure() ? r.failure().errorText : '?';
    if (why !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${why}`);
  });
  page.on('response', (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  await page.goto(base + '/', { waitUntil: 'load' });
  return { page, problems };
}

export async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

// /v1/kv's pool occupancy: used bytes over pool bytes (pool.occupancy when
// the ledger has it)
export async function kvOccupancy(base) {
  const p = (await getJSON(base + '/v1/kv')).pool;
  return p.occupancy != null ? p.occupancy : p.bytes_used / p.bytes_total;
}

// A streamed chat completion read to its end; resolves to the text.
export async function streamChat(base, body, onFirst) {
  const r = await fetch(base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(Object.assign({ stream: true }, body)),
  });
  if (!r.ok) throw new Error('chat: HTTP ' + r.status + ': ' + (await r.text()));
  const dec = new TextDecoder();
  let text = '';
  let raw = '';
  for await (const chunk of r.body) {
    raw += dec.decode(chunk, { stream: true });
    let cut;
    while ((cut = raw.indexOf('\n\n')) >= 0) {
      const ev = raw.slice(0, cut);
      raw = raw.slice(cut + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const c = JSON.parse(ev.slice(6));
      const d = c.choices && c.choices[0] && c.choices[0].delta;
      if (d && d.content) {
        if (!text && onFirst) onFirst();
        text += d.content;
      }
    }
  }
  return text;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
