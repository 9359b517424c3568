// The page in headless Chromium (run by tests/test_browser.sh, which starts
// two servers: KVL_BASE_CHAT with stories260K, KVL_BASE_LOAD with a slower
// random-weights model so that 8 streams stay open long enough to be seen).
// Every assertion reads the DOM's ids and data- attributes or the API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openPage, getJSON, kvOccupancy, streamChat, sleep } from './lib.mjs';

const CHAT = process.env.KVL_BASE_CHAT;
const LOAD = process.env.KVL_BASE_LOAD;
let browser;

before(async () => {
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
});

const attr = (page, sel, name) => page.$eval(sel, (e, n) => e.dataset[n], name);

async function waitMapUpdates(page, n) {
  await page.waitForFunction((k) => Number(document.getElementById('map').dataset.updates || 0) >= k,
    { timeout: 20000 }, n);
}

test('the page loads with no console errors or failed requests', async () => {
  const { page, problems } = await openPage(browser, CHAT);
  await waitMapUpdates(page, 3);
  await page.waitForFunction(() => document.getElementById('series-panel').dataset.samples !== undefined,
    { timeout: 20000 });
  const kv = (await getJSON(CHAT + '/v1/kv')).pool;
  assert.equal(Number(await attr(page, '#map', 'nBlocks')), kv.blocks_total, 'one cell per pool block');
  assert.match(await page.$eval('#model', (e) => e.textContent), /stories260K/);
  assert.deepEqual(problems, []);
  await page.close();
});

test('a chat round trip at temperature 0 streams the API\'s text', async () => {
  const { page, problems } = await openPage(browser, CHAT);
  let sent = null;
  let ctype = null;
  page.on('request', (r) => r.url().endsWith('/v1/chat/completions') && (sent = JSON.parse(r.postData())));
  page.on('response', (r) => r.url().endsWith('/v1/chat/completions') && (ctype = r.headers()['content-type']));
  const prompt = 'Tell me a story about a cat and a dog.';
  await page.$eval('#chat-temp', (e) => (e.value = '0'));
  await page.$eval('#chat-max', (e) => (e.value = '60'));
  await page.type('#chat-input', prompt);
  await page.click('#chat-send');
  await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 20000 });
  const shown = await page.$eval('.msg.assistant', (e) => e.textContent);
  assert.equal(sent.stream, true, 'the page asked for a stream');
  assert.equal(ctype, 'text/event-stream');
  const r = await fetch(CHAT + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: prompt }], temperature: 0, max_tokens: 60 }),
  });
  const j = await r.json();
  assert.ok(shown.length > 0);
  assert.equal(shown, j.choices[0].message.content);
  assert.equal(Number(await attr(page, '#chat-usage', 'promptTokens')), j.usage.prompt_tokens);
  assert.equal(Number(await attr(page, '#chat-usage', 'completionTokens')), j.usage.completion_tokens);
  assert.ok(Number.isInteger(Number(await attr(page, '#chat-usage', 'cachedTokens'))));
  // a second turn resends the first: its blocks come from the prefix cache
  await page.type('#chat-input', 'And then?');
  await page.click('#chat-send');
  await page.waitForFunction(() => document.querySelectorAll('.msg.assistant[data-state="done"]').length === 2,
    { timeout: 20000 });
  assert.ok(Number(await attr(page, '#chat-usage', 'cachedTokens')) >= 16, 'cached tokens on turn 2');
  assert.equal(sent.messages.length, 3, 'turn 2 sends the conversation');
  assert.deepEqual(problems, []);
  await page.close();
});

test('stop aborts the answer and the server cancels the request', async () => {
  const { page } = await openPage(browser, LOAD);
  await page.$eval('#chat-max', (e) => (e.value = '800'));
  await page.type('#chat-input', 'Go on and on.');
  await page.click('#chat-send');
  for (let i = 0; ; i++) { // stop once the engine runs it
    const kv = await getJSON(LOAD + '/v1/kv');
    if (kv.requests.some((r) => r.state === 'running' && r.generated_tokens > 0)) break;
    assert.ok(i < 200, 'the page\'s request never ran');
    await sleep(50);
  }
  await page.click('#chat-stop');
  await page.waitForSelector('.msg.assistant[data-state="stopped"]', { timeout: 5000 });
  for (let i = 0; i < 100; i++) {
    const kv = await getJSON(LOAD + '/v1/kv');
    if (kv.requests.length === 0 && kv.pool.blocks_used === 0) break;
    assert.ok(i < 99, 'the request is still open after stop');
    await sleep(100);
  }
  await page.close();
});

test('8 streams: 8 holders on the map, occupancy as /v1/kv, then all free or cached', async () => {
  const { page, problems } = await openPage(browser, LOAD);
  await waitMapUpdates(page, 1);
  const streams = [];
  let decoding = 0;
  for (let i = 0; i < 8; i++)
    streams.push(streamChat(LOAD, {
      messages: [{ role: 'user', content: `Client ${i} asks for a long story.` }],
      max_tokens: 200, temperature: 1, seed: i + 1, ignore_eos: true,
    }, () => decoding++));
  await page.waitForFunction(() => document.getElementById('map').dataset.holders === '8', { timeout: 60000 });
  const ids = (await attr(page, '#map', 'holderIds')).split(',');
  assert.equal(new Set(ids).size, 8);
  // Once all 8 decode, the page's figure lies between /v1/kv's just before
  // and just after one page update, give or take one engine step: the map
  // is read live, /v1/kv's figures are published at the end of each step,
  // and in one step each stream adds at most one block.
  while (decoding < 8) await sleep(20);
  const pool = (await getJSON(LOAD + '/v1/kv')).pool;
  const eps = (8.5 * pool.block_bytes) / pool.bytes_total;
  const a = await kvOccupancy(LOAD);
  const u0 = Number(await attr(page, '#map', 'updates'));
  await waitMapUpdates(page, u0 + 1);
  const shown = Number(await attr(page, '#occupancy', 'value'));
  const b = await kvOccupancy(LOAD);
  assert.ok(shown > 0);
  assert.ok(shown >= Math.min(a, b) - eps && shown <= Math.max(a, b) + eps,
    `page occupancy ${shown} outside /v1/kv's [${a}, ${b}]`);
  const texts = await Promise.all(streams);
  assert.ok(texts.every((t) => t.length > 0));
  const u1 = Number(await attr(page, '#map', 'updates'));
  await waitMapUpdates(page, u1 + 2);
  assert.equal(await attr(page, '#map', 'allFreeOrCached'), '1');
  assert.equal(await attr(page, '#map', 'holders'), '0');
  assert.equal(await attr(page, '#map', 'used'), '0');
  assert.deepEqual(problems, []);
  await page.close();
});

test('a server with --api-key: the page asks for the key once, then reads the map', async () => {
  const page = await browser.newPage();
  await page.goto(process.env.KVL_BASE_KEY + '/', { waitUntil: 'load' });
  await page.waitForSelector('#key-dialog:not([hidden])', { timeout: 10000 });
  await page.type('#key-input', process.env.KVL_KEY);
  await page.click('#key-form button');
  await waitMapUpdates(page, 2);
  assert.equal(await page.$eval('#key-dialog', (e) => e.hidden), true);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kvllm.key')), process.env.KVL_KEY);
  assert.match(await page.$eval('#model', (e) => e.textContent), /stories260K/);
  await page.close();
});
