// Screenshot of the page under load, for docs/: N client loops stream chat
// completions (one shared system prompt, so prefix blocks are shared and
// cached) while the page answers a chat turn; then a PNG of the page.
//   KVL_NPM_DIR=build/npm_browser node tests/browser/screenshot.mjs BASE OUT.png [STREAMS]
// tests/browser/screenshot.sh starts the server and runs this.
import { launch, streamChat, sleep } from './lib.mjs';

const [base, out, nArg] = process.argv.slice(2);
if (!base || !out) {
  console.error('usage: screenshot.mjs BASE_URL OUT.png [STREAMS]');
  process.exit(2);
}
const nStreams = Number(nArg || 12);
const system = 'You are a storyteller. Every story has a child, an animal and a lesson, ' +
  'and it ends well. Keep the words simple.';
let running = true;
async function client(i) {
  for (let k = 0; running; k++)
    await streamChat(base, {
      messages: [{ role: 'system', content: system }, { role: 'user', content: `Story ${i}.${k}, please.` }],
      max_tokens: 400, temperature: 1, seed: 100 * i + k, ignore_eos: true,
    }).catch(() => sleep(100));
}

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1100, deviceScaleFactor: 1 });
  await page.goto(base + '/', { waitUntil: 'load' });
  const clients = [];
  for (let i = 0; i < nStreams; i++) clients.push(client(i));
  await page.$eval('#chat-temp', (e) => (e.value = '0'));
  await page.$eval('#chat-max', (e) => (e.value = '120'));
  await page.type('#chat-input', 'Tell me a story about a cat who finds a hat.');
  await page.click('#chat-send');
  await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 60000 });
  await sleep(Number(process.env.KVL_SHOT_WAIT_MS || 20000)); // let the charts fill
  await page.waitForFunction((n) => Number(document.getElementById('map').dataset.holders) >= n,
    { timeout: 30000 }, Math.min(8, nStreams));
  await page.$eval('#plan-context', (e) => (e.value = '512'));
  await page.click('#plan-go');
  await page.waitForFunction(() => document.getElementById('plan-result').dataset.users !== undefined);
  await page.screenshot({ path: out, fullPage: true });
  const holders = await page.$eval('#map', (e) => e.dataset.holders);
  console.log(`wrote ${out}: ${holders} holders on the map`);
} finally {
  running = false;
  await browser.close();
}
process.exit(0);
