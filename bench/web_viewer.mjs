// One viewer of kvllm's page for bench/web_viewer.sh.
//   KVL_NPM_DIR=build/npm_browser node bench/web_viewer.mjs BASE [browser|poll]
// browser (default): headless Chromium (tests/browser/lib.mjs) opens BASE/,
//   waits until the block map has drawn twice, prints "ready" and keeps the
//   page open (it polls the map and the history as a person's tab would);
// poll: no browser; node fetches /v1/kv/map and /v1/kv/history at the
//   page's rates (web/app.js: every 400 ms and every 1 s), so that the
//   server's share of the cost shows apart from the browser's CPU.
// On SIGTERM it prints the map updates and the CPU seconds the viewer used
// (the browser's whole process tree, or this process).
import { readFileSync, readdirSync } from 'node:fs';

const [base, mode = 'browser'] = process.argv.slice(2);
const HZ = 100; // USER_HZ: /proc's clock ticks
let updates = 0;
let rootPid = process.pid;
let browser = null;
let page = null;

// utime + stime (seconds) of pid and its descendants
function treeCpu(pid) {
  const kids = new Map();
  const cpu = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let st;
    try {
      st = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(f[1]);
    cpu.set(Number(d), (Number(f[11]) + Number(f[12])) / HZ);
    if (!kids.has(ppid)) kids.set(ppid, []);
    kids.get(ppid).push(Number(d));
  }
  let sum = 0;
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop();
    sum += cpu.get(p) || 0;
    todo.push(...(kids.get(p) || []));
  }
  return sum;
}

async function poll(path, ms, onOk) {
  for (;;) {
    const t = Date.now();
    const r = await fetch(base + path).catch(() => null);
    if (r && r.ok) {
      await r.json();
      onOk();
    }
    await new Promise((res) => setTimeout(res, Math.max(0, ms - (Date.now() - t))));
  }
}

if (mode === 'poll') {
  poll('/v1/kv/map', 400, () => updates++);
  poll('/v1/kv/history', 1000, () => {});
  while (updates < 2) await new Promise((res) => setTimeout(res, 50));
} else {
  const { launch } = await import('../tests/browser/lib.mjs');
  browser = await launch({ handleSIGTERM: false });
  rootPid = browser.process().pid;
  page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  await page.goto(base + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => Number(document.getElementById('map').dataset.updates || 0) >= 2,
    { timeout: 30000 });
}
const cpu0 = treeCpu(rootPid);
const t0 = Date.now();
console.log('ready');
process.on('SIGTERM', async () => {
  if (page) updates = await page.$eval('#map', (e) => Number(e.dataset.updates)).catch(() => -1);
  const cpu = treeCpu(rootPid) - cpu0;
  const wall = (Date.now() - t0) / 1000;
  console.log(`map updates ${updates} cpu_s ${cpu.toFixed(2)} wall_s ${wall.toFixed(2)}`);
  if (browser) await browser.close();
  process.exit(0);
});
